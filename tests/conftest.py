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


# Pretraining steps of the stand-in backbone used by the trainer tests: enough that prompt tuning
# learns the synthetic label tasks (measured with 700: dev topic/negation ~98/70 after 240
# prompt-tuning steps vs ~54/53 at step 0; negation needs ~240 steps, 450 pretraining steps are too few).
STANDIN_TEST_STEPS = 700


@pytest.fixture(scope="session")
def standin_dir(tmp_path_factory):
    """A stand-in pretrained T5 (vocab 640, d_model 64, 2+2 layers) whose tokenizer covers the
    synthetic suite, built once per session (~45 s). Set TALORA_TEST_STANDIN_DIR to a directory to
    reuse a build across sessions (it is rebuilt only if its settings differ)."""
    from talora_jax.data import synthetic
    from talora_jax.train.standin import build_standin_backbone

    synthetic.register_all()
    out = os.environ.get("TALORA_TEST_STANDIN_DIR") or str(tmp_path_factory.mktemp("standin"))
    return build_standin_backbone(out, steps=STANDIN_TEST_STEPS, log=lambda msg: None)
