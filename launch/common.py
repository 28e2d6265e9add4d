"""What every launcher shares: repo on sys.path, quiet logs, flag parsing and user-error handling.

A user error (unknown config key, wrong type, bad task name, missing weights,
unwritable workdir, ...) exits with status 2 and one paragraph on stderr, no
traceback. Bugs keep their traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Callable, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TFDS imports TF; its C++ banner is noise here
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # "PyTorch was not found": we only use its tokenizers


def fail(message: str, code: int = 2) -> None:
    """Prints a user error as one paragraph and exits."""
    print(f"error: {' '.join(message.split())}", file=sys.stderr)  # one paragraph; the terminal wraps it
    sys.exit(code)


def parse_flags(argv: Sequence[str]) -> list[str]:
    """absl flag parsing that reports bad flags and config overrides as user errors."""
    from absl import flags
    try:
        return flags.FLAGS(list(argv))
    except flags.Error as e:
        fail(f"{e}. Run with --helpfull to list the flags.")
    except (AttributeError, KeyError) as e:  # ml_collections: override of a key the config lacks
        key = str(e).strip("'\"")
        fail(f"unknown config key {key!r} in an override. Overrides must name existing fields, e.g. "
             "--config.optim.lr_fast=0.1; see the config file for the available fields.")
    except (TypeError, ValueError) as e:
        fail(f"bad config override: {e}.")
    return []


def load_config(config_flag):
    """The parsed config, turning a missing or broken config file into a user error."""
    try:
        config = config_flag.value
        config.to_dict()  # a config file that failed to load raises on first access
        return config
    except Exception as e:  # noqa: BLE001 - anything here is the user's config file
        fail(f"could not load the config file: {e}. Pass --config=configs/<name>.py (e.g. configs/demo.py).")


def check_workdir(workdir: str) -> str:
    """Creates the workdir, or fails with a user error if it cannot be written."""
    if not workdir:
        fail("--workdir is required: the directory for checkpoints, logs and results.")
    workdir = os.path.abspath(os.path.expanduser(workdir))
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as e:
        fail(f"cannot create the workdir {workdir!r} ({e.strerror}); choose a directory you can write.")
    if not os.access(workdir, os.W_OK):
        fail(f"the workdir {workdir!r} is not writable; choose a directory you can write.")
    return workdir


def setup_logging() -> None:
    """Our progress on stdout (process 0 decides inside the loop); libraries only report errors."""
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.ERROR)  # Orbax and TFDS report routine events as warnings
    ours = logging.getLogger("talora_jax")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    ours.handlers[:] = [handler]
    ours.setLevel(logging.INFO)
    ours.propagate = False  # absl's root handler would print every line again, with its prefix


def run_reporting_user_errors(fn: Callable[[], object]) -> object:
    """Runs ``fn``; a user-facing error becomes a one-paragraph message and exit status 2."""
    from talora_jax.errors import user_error_types
    try:
        return fn()
    except user_error_types() as e:
        fail(f"{type(e).__name__}: {e}")
    except KeyboardInterrupt:
        fail("interrupted; rerun the same command to resume from the last checkpoint.", code=130)
