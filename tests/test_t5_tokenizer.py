"""The tokenizer loads offline from a checkpoint directory, and its fingerprint tracks its content."""

import shutil

import pytest

from talora_jax.t5 import ModelNotFoundError, load_tokenizer, tokenizer_fingerprint
from tests import t5_fixtures


def test_spiece_directory_loads_a_t5_tokenizer(spm_dir):
    tok = load_tokenizer(spm_dir)
    ids = tok("the quick brown fox").input_ids
    assert ids[-1] == tok.eos_token_id == 1 and tok.pad_token_id == 0
    assert tok.decode(ids, skip_special_tokens=True) == "the quick brown fox"
    assert "<extra_id_0>" in tok.get_vocab()  # T5 sentinels, as in the hub checkpoints


def test_fingerprint_is_stable_and_content_sensitive(spm_dir, tmp_path):
    first = tokenizer_fingerprint(load_tokenizer(spm_dir))
    assert first == tokenizer_fingerprint(load_tokenizer(spm_dir))
    other = tmp_path / "other"
    shutil.copytree(spm_dir, other)
    t5_fixtures.CORPUS.append("zebra quantum xylophone")
    try:
        t5_fixtures.make_spm_tokenizer(str(other))
    finally:
        t5_fixtures.CORPUS.pop()
    assert tokenizer_fingerprint(load_tokenizer(str(other))) != first


def test_missing_tokenizer_dir(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_tokenizer(str(tmp_path / "missing"))
