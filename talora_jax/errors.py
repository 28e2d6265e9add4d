"""The exceptions that mean "the user asked for something that cannot work".

Entry points print these as one paragraph and exit non-zero, without a
traceback: the message already says what was wrong and how to fix it. Any
other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(ValueError):
    """A user error raised by the launchers themselves (bad flag, unwritable workdir, ...)."""


def user_error_types() -> tuple[type[BaseException], ...]:
    """Every user-facing error type of the package (imported lazily: it spans all subpackages)."""
    from talora_jax.data.errors import DataError
    from talora_jax.parallel import MeshError
    from talora_jax.prompts.spec import PromptConfigError
    from talora_jax.t5 import CheckpointError, ModelNotFoundError, T5ConfigError
    from talora_jax.train.checkpoint import CheckpointMismatchError, CheckpointNotFoundError
    from talora_jax.train.loop import TrainingDivergedError
    from talora_jax.train.optim import OptimConfigError
    return (UserError, DataError, MeshError, PromptConfigError, CheckpointError, ModelNotFoundError,
            T5ConfigError, CheckpointMismatchError, CheckpointNotFoundError, TrainingDivergedError,
            OptimConfigError)
