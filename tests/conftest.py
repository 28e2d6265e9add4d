import os

# Eight fake CPU devices for mesh tests; must be set before jax is imported anywhere.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test may touch the network
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest

from tests import t5_fixtures


@pytest.fixture(scope="session")
def tiny_v1_dir(tmp_path_factory):
    """A random T5 v1.0 (ReLU, tied) checkpoint directory plus its torch reference model."""
    path = str(tmp_path_factory.mktemp("tiny_v1"))
    model = t5_fixtures.make_hf_t5(path, seed=0)
    return path, model


@pytest.fixture(scope="session")
def tiny_v11_dir(tmp_path_factory):
    """A random T5 v1.1 (gated-GELU, untied lm_head) checkpoint directory plus its torch model."""
    path = str(tmp_path_factory.mktemp("tiny_v11"))
    model = t5_fixtures.make_hf_t5(path, seed=1, **t5_fixtures.TINY_V11)
    return path, model


@pytest.fixture(scope="session")
def spm_dir(tmp_path_factory):
    """A directory with a freshly trained SentencePiece ``spiece.model`` (no download)."""
    return t5_fixtures.make_spm_tokenizer(str(tmp_path_factory.mktemp("spm")))
