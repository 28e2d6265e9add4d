"""Loading HF checkpoints: formats, presets, logical axes, and every bad-input error."""

import json
import os
import shutil

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from talora_jax.t5 import (PRESETS, T5, CheckpointError, ModelNotFoundError, T5Config, T5ConfigError,
                           abstract_params, load_pretrained, logical_axes, preset)


def _copy(src, tmp_path, name="ckpt"):
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return dst


def _rewrite(ckpt, edit):
    path = ckpt / "model.safetensors"
    tensors = dict(load_file(str(path)))
    edit(tensors)
    save_file(tensors, str(path))


def test_sharded_checkpoint_with_index_loads_identically(tiny_v11_dir, tmp_path):
    src, _ = tiny_v11_dir
    ckpt = _copy(src, tmp_path)
    tensors = load_file(str(ckpt / "model.safetensors"))
    os.remove(ckpt / "model.safetensors")
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    weight_map = {}
    for shard, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, str(ckpt / shard))
        weight_map.update({k: shard for k in keys})
    (ckpt / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    _, sharded = load_pretrained(str(ckpt))
    _, single = load_pretrained(src)
    jax.tree_util.tree_map(np.testing.assert_array_equal, sharded, single)


def test_missing_path_names_it(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_pretrained(str(tmp_path / "nope"))


def test_directory_without_config_json(tiny_v1_dir, tmp_path):
    ckpt = _copy(tiny_v1_dir[0], tmp_path)
    os.remove(ckpt / "config.json")
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        load_pretrained(str(ckpt))


def test_non_t5_model_type(tiny_v1_dir, tmp_path):
    ckpt = _copy(tiny_v1_dir[0], tmp_path)
    raw = json.loads((ckpt / "config.json").read_text())
    raw["model_type"] = "bart"
    (ckpt / "config.json").write_text(json.dumps(raw))
    with pytest.raises(T5ConfigError, match="model_type='bart'"):
        load_pretrained(str(ckpt))


def test_missing_tensor_is_named(tiny_v1_dir, tmp_path):
    ckpt = _copy(tiny_v1_dir[0], tmp_path)
    _rewrite(ckpt, lambda t: t.pop("decoder.block.2.layer.1.EncDecAttention.k.weight"))
    with pytest.raises(CheckpointError, match=r"decoder\.block\.2\.layer\.1\.EncDecAttention\.k\.weight"):
        load_pretrained(str(ckpt))


def test_wrong_shape_is_named(tiny_v1_dir, tmp_path):
    ckpt = _copy(tiny_v1_dir[0], tmp_path)
    _rewrite(ckpt, lambda t: t.update({"encoder.final_layer_norm.weight": np.ones(7, np.float32)}))
    with pytest.raises(CheckpointError, match=r"encoder\.final_layer_norm\.weight.*\(7,\).*\(32,\)"):
        load_pretrained(str(ckpt))


def test_leftover_tensor_is_an_error(tiny_v1_dir, tmp_path):
    ckpt = _copy(tiny_v1_dir[0], tmp_path)
    _rewrite(ckpt, lambda t: t.update({"encoder.block.2.layer.0.layer_norm.weight": np.ones(32, np.float32)}))
    with pytest.raises(CheckpointError, match=r"does not use.*encoder\.block\.2\.layer\.0\.layer_norm"):
        load_pretrained(str(ckpt))


def test_tied_aliases_are_accepted_only_when_equal(tiny_v1_dir, tmp_path):
    ckpt = _copy(tiny_v1_dir[0], tmp_path)
    _rewrite(ckpt, lambda t: t.update({"encoder.embed_tokens.weight": t["shared.weight"].copy(),
                                       "lm_head.weight": t["shared.weight"].copy()}))
    load_pretrained(str(ckpt))
    _rewrite(ckpt, lambda t: t.update({"lm_head.weight": t["shared.weight"] + 1.0}))
    with pytest.raises(CheckpointError, match="lm_head.weight"):
        load_pretrained(str(ckpt))


def test_pickled_only_directory_says_how_to_convert(tiny_v1_dir, tmp_path):
    ckpt = _copy(tiny_v1_dir[0], tmp_path)
    os.remove(ckpt / "model.safetensors")
    (ckpt / "pytorch_model.bin").write_bytes(b"not unpickled")
    with pytest.raises(CheckpointError, match="never unpickles.*save_pretrained.*safe_serialization=True"):
        load_pretrained(str(ckpt))


def test_offline_hub_name_fails_fast_with_instructions(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="hf download google/flan-t5-small"):
        load_pretrained("google/flan-t5-small")


def test_bf16_safetensors_load_exactly(tiny_v1_dir, tmp_path):
    import ml_dtypes
    ckpt = _copy(tiny_v1_dir[0], tmp_path)
    import torch
    from safetensors.torch import load_file as tload, save_file as tsave
    tensors = {k: v.to(torch.bfloat16) for k, v in tload(str(ckpt / "model.safetensors")).items()}
    tsave(tensors, str(ckpt / "model.safetensors"))
    _, params = load_pretrained(str(ckpt), param_dtype="bfloat16")
    expected = tensors["shared.weight"].float().numpy().astype(ml_dtypes.bfloat16)
    np.testing.assert_array_equal(params["shared"]["embedding"], expected)


def test_every_parameter_has_logical_axes(tiny_v11_dir):
    cfg, params = load_pretrained(tiny_v11_dir[0])
    specs = logical_axes(cfg)
    flat_specs = jax.tree_util.tree_leaves_with_path(specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
    flat_params = jax.tree_util.tree_leaves_with_path(params)
    assert [p for p, _ in flat_specs] == [p for p, _ in flat_params]
    for (path, spec), (_, value) in zip(flat_specs, flat_params):
        assert len(spec) == value.ndim and all(isinstance(a, str) for a in spec), (path, spec)
    assert specs["decoder"]["layers_0"]["mlp"]["wi_0"] == jax.sharding.PartitionSpec("embed", "mlp")
    assert specs["lm_head"]["kernel"] == jax.sharding.PartitionSpec("embed", "vocab")


@pytest.mark.parametrize("name", ["t5-small", "t5-base", "google/t5-v1_1-base", "google/flan-t5-large", "t5-11b"])
def test_presets_match_transformers_parameter_counts(name):
    """Our presets and module shapes against transformers' own model built on the meta device."""
    import torch
    from transformers import T5Config as HFConfig, T5ForConditionalGeneration

    cfg = preset(name)
    spec = cfg.to_hf_dict()
    spec.pop("tie_word_embeddings")
    spec.pop("scale_decoder_outputs")
    with torch.device("meta"):
        hf = T5ForConditionalGeneration(HFConfig(**spec))
    expected = sum(p.numel() for p in hf.parameters())  # tied head counted once
    if not cfg.tie_word_embeddings:
        expected += cfg.vocab_size * cfg.d_model  # v1.1/FLAN checkpoints carry their own lm_head
    ours = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(abstract_params(cfg)))
    assert ours == expected


def test_published_sizes_and_unknown_preset():
    count = lambda n: sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(abstract_params(preset(n))))
    assert count("t5-small") == 60_506_624 and count("t5-base") == 222_903_552
    assert count("google/flan-t5-base") == 247_577_856
    assert set(PRESETS) >= {"t5-3b", "google/t5-v1_1-xxl", "google/flan-t5-xxl", "google/flan-t5-small"}
    with pytest.raises(T5ConfigError, match="flan-t5-base"):
        preset("google/flan-t5-bas")


def test_config_validation_messages():
    with pytest.raises(T5ConfigError, match="feed_forward_proj"):
        T5Config(feed_forward_proj="gated-swish")
    with pytest.raises(T5ConfigError, match="dtype"):
        T5Config(dtype="float8")


def test_save_pretrained_roundtrips_and_transformers_loads_it(tiny_v11_dir, tmp_path):
    """Our writer produces a real HF checkpoint: transformers loads it and gives our logits."""
    import torch
    from transformers import T5ForConditionalGeneration
    from talora_jax.t5 import T5, save_pretrained
    from tests import t5_fixtures

    cfg, params = load_pretrained(tiny_v11_dir[0])
    save_pretrained(cfg, params, str(tmp_path / "out"))
    cfg2, params2 = load_pretrained(str(tmp_path / "out"))
    assert cfg2 == cfg
    jax.tree_util.tree_map(np.testing.assert_array_equal, params2, params)

    tied_cfg = cfg.replace(tie_word_embeddings=True)  # transformers>=5 loads T5 heads tied
    tied = {k: v for k, v in params.items() if k != "lm_head"}
    save_pretrained(tied_cfg, tied, str(tmp_path / "tied"))
    hf = T5ForConditionalGeneration.from_pretrained(str(tmp_path / "tied")).eval()
    ids, mask, dec, dmask = t5_fixtures.padded_batch(cfg.vocab_size)
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(ids).long(), attention_mask=torch.tensor(mask),
                 decoder_input_ids=torch.tensor(dec).long(), decoder_attention_mask=torch.tensor(dmask)).logits
    ours = T5(tied_cfg).apply({"params": tied}, ids, mask, dec, dmask)
    np.testing.assert_allclose(np.asarray(ours), ref.numpy(), atol=1e-4)
