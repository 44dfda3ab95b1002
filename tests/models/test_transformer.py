"""LTX-2 transformer: config refusals, strict and selective loading, x0, perturbation batching, chunking.

Numerical equality with the official model is covered by tests/models/test_parity.py and test_parity_v12.py
(transformer_ltx2, transformer_ltx23); the LTX-2.3 paths (resident, streamed, converted) by test_transformer_ltx23.py.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten
from safetensors import safe_open
from safetensors.numpy import save_file

from ltx2.models.transformer import (ALL, LTX2Transformer, ModalityInput, Perturbation, TransformerConfig,
                                     TransformerConfigError, load_transformer)
from ltx2.models.transformer.attention import DEFAULT_QUERY_CHUNK
from ltx2.models.transformer.block import AVTransformerBlock
from ltx2.models.transformer.streaming import TransformerWeights
from ltx2.models.weights import CheckpointError, read_header
from ltx2.models.weights import source as source_mod

SEED0 = Path(__file__).parents[1] / "fixtures" / "seed0"
TINY = SEED0 / "transformer_ltx2.safetensors"
TINY23 = SEED0 / "transformer_ltx23.safetensors"
PREFIX = "model.diffusion_model."


def _read(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    with safe_open(str(path), "np") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())


def _tiny_config() -> dict:
    return json.loads(_read(TINY)[1]["config"])


def _inputs(batch: int = 1) -> tuple[ModalityInput, ModalityInput]:
    z = np.load(SEED0 / "transformer_ltx2.npz")

    def m(p: str) -> ModalityInput:
        rep = lambda a: np.concatenate([a] * batch, axis=0)  # noqa: E731
        return ModalityInput(latent=mx.array(rep(z[f"{p}_latent"])), sigma=mx.array(rep(z[f"{p}_sigma"])),
                             timesteps=mx.array(rep(z[f"{p}_timesteps"])), positions=rep(z[f"{p}_positions"]),
                             context=mx.array(rep(z[f"{p}_context"])))

    return m("video"), m("audio")


@pytest.fixture(scope="module")
def model() -> LTX2Transformer:
    return load_transformer(TINY)


# ---------------------------------------------------------------------------------------- config
def _tiny23_config() -> dict:
    return read_header(TINY23).config()  # the committed 2.3 file is header-only (no tensor data)


def test_ltx23_config_is_read_from_the_checkpoint_switches():
    c = TransformerConfig.from_config(_tiny23_config())
    assert (c.gated_attention, c.cross_attention_adaln, c.caption_projection, c.prompt_adaln) == (True, True, False,
                                                                                                   True)
    assert c.adaln_params == c.block.adaln_params == 9
    assert (c.block.gated_attention, c.block.cross_attention_adaln) == (True, True)
    two = TransformerConfig.from_config(_tiny_config())
    assert (two.gated_attention, two.cross_attention_adaln, two.caption_projection, two.adaln_params) == (
        False, False, True, 6)
    # the committed 2.3 file is header-only: the config is accepted, the missing bytes are refused on read
    with pytest.raises(CheckpointError, match="truncated"):
        load_transformer(TINY23)


@pytest.mark.parametrize("key,value", [("qk_norm", "layer_norm"), ("share_ff", True), ("dropout", 0.1),
                                       ("rope_type", "interleaved"), ("frequencies_precision", "float32"),
                                       ("use_middle_indices_grid", None)])
def test_unsupported_option_values_are_refused_by_name(key, value):
    cfg = _tiny_config()
    if value is None:
        del cfg["transformer"][key]
    else:
        cfg["transformer"][key] = value
    with pytest.raises(TransformerConfigError, match=key):
        TransformerConfig.from_config(cfg)


@pytest.mark.parametrize("key,value", [("use_prompt_adaln_single", False), ("ff_bias", False),
                                       ("audio_ff_bias", False), ("use_keyframes_abs_pos_embedding", True)])
def test_later_version_options_are_refused_by_name(key, value):
    cfg = _tiny23_config()
    cfg["transformer"][key] = value
    with pytest.raises(TransformerConfigError, match=f"{key}={value!r}.*LTX-2.5"):
        TransformerConfig.from_config(cfg)
    cfg["transformer"][key] = not value  # the value every LTX-2 / 2.3 checkpoint has is accepted
    TransformerConfig.from_config(cfg)


def test_each_ltx23_switch_changes_the_layout_on_its_own():
    names = lambda c: {k: v.shape for k, v in tree_flatten(LTX2Transformer(c).parameters())}  # noqa: E731
    base = TransformerConfig.from_config(_tiny_config())
    plain = names(base)
    cfg = _tiny_config()
    cfg["transformer"]["apply_gated_attention"] = True
    gated = names(TransformerConfig.from_config(cfg))
    # one (heads, width) gate per attention and block: 6 x 2 blocks, weight and bias
    assert sorted(set(gated) - set(plain)) == sorted(
        f"transformer_blocks.{i}.{a}.to_gate_logits.{w}" for i in (0, 1) for w in ("weight", "bias")
        for a in ("attn1", "attn2", "audio_attn1", "audio_attn2", "audio_to_video_attn", "video_to_audio_attn"))
    assert gated["transformer_blocks.0.audio_to_video_attn.to_gate_logits.weight"] == (2, 64)  # audio heads
    cfg = _tiny_config()
    cfg["transformer"]["cross_attention_adaln"] = True
    adaln = names(TransformerConfig.from_config(cfg))
    assert adaln["transformer_blocks.0.scale_shift_table"] == (9, 64) and adaln["adaln_single.linear.weight"] == (
        9 * 64, 64)
    assert adaln["transformer_blocks.1.prompt_scale_shift_table"] == (2, 64)
    assert adaln["transformer_blocks.1.audio_prompt_scale_shift_table"] == (2, 32)
    assert adaln["prompt_adaln_single.linear.weight"] == (128, 64)
    assert adaln["audio_prompt_adaln_single.linear.weight"] == (64, 32)
    cfg = _tiny_config()
    cfg["transformer"]["caption_proj_before_connector"] = True
    del cfg["transformer"]["caption_channels"]  # not needed when the text side projects
    moved = names(TransformerConfig.from_config(cfg))
    assert not [k for k in moved if "caption_projection" in k] and set(plain) - set(moved) == {
        k for k in plain if "caption_projection" in k}


def test_config_reads_sizes_from_metadata():
    c = TransformerConfig.from_config(_tiny_config())
    assert (c.num_layers, c.inner_dim, c.audio_inner_dim, c.caption_channels) == (2, 64, 32, 24)
    real = TransformerConfig()  # defaults are the LTX-2 19B sizes
    assert (real.num_layers, real.inner_dim, real.audio_inner_dim) == (48, 4096, 2048)


def test_blocks_are_built_from_one_block_config_carrying_the_version_flags():
    c = TransformerConfig.from_config(_tiny_config())
    b = c.block
    assert (b.video_dim, b.audio_dim, b.video_heads, b.eps) == (64, 32, c.num_attention_heads, c.norm_eps)
    assert (b.gated_attention, b.cross_attention_adaln, b.ff_bias) == (False, False, True)  # LTX-2
    shapes = lambda m: {k: v.shape for k, v in tree_flatten(m.parameters())}  # noqa: E731
    # the resident model and the streamed / converted path's block builder build the same block
    assert shapes(TransformerWeights(TINY).new_block()) == shapes(LTX2Transformer(c).transformer_blocks[0])
    # the LTX-2.3 switches reach the block builder
    blk = AVTransformerBlock(replace(b, gated_attention=True, cross_attention_adaln=True))
    assert "to_gate_logits" in blk.attn1 and "to_gate_logits" in blk.video_to_audio_attn
    assert blk.scale_shift_table.shape == (9, 64) and blk.audio_prompt_scale_shift_table.shape == (2, 32)
    c23 = TransformerConfig.from_config(_tiny23_config())
    assert shapes(AVTransformerBlock(c23.block)) == shapes(LTX2Transformer(c23).transformer_blocks[0])
    no_bias = AVTransformerBlock(replace(b, ff_bias=False))
    assert "bias" not in no_bias.ff.proj_in and "bias" not in no_bias.audio_ff.proj_out
    assert "bias" in AVTransformerBlock(b).ff.proj_in


# ---------------------------------------------------------------------------------------- loading
def test_strict_loader_names_missing_and_misshaped_keys(tmp_path):
    tensors, meta = _read(TINY)
    missing = PREFIX + "transformer_blocks.1.attn2.to_k.bias"
    bad = PREFIX + "transformer_blocks.0.audio_ff.net.0.proj.weight"  # (128, 32)
    del tensors[missing]
    tensors[bad] = np.zeros((128, 33), np.float32)
    path = tmp_path / "tampered.safetensors"
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(CheckpointError) as e:
        load_transformer(path)
    msg = str(e.value)
    assert "transformer_blocks.1.attn2.to_k.bias" in msg and "missing" in msg
    assert "transformer_blocks.0.audio_ff.proj_in.weight" in msg
    assert "(128, 32)" in msg and "(128, 33)" in msg


def test_loader_reads_only_transformer_tensors(tmp_path, monkeypatch):
    tensors, meta = _read(TINY)
    # Tensors of other components, including the connectors under the transformer's own prefix.
    # Read by mistake, any of them would also break strict loading (unexpected key / bad shape).
    tensors["vae.decoder.conv_in.conv.weight"] = np.ones((4, 4), np.float32)
    tensors[PREFIX + "video_embeddings_connector.transformer_1d_blocks.0.attn1.to_q.weight"] = np.ones((3,), np.float32)
    tensors[PREFIX + "audio_embeddings_connector.learnable_registers"] = np.ones((2, 2), np.float32)
    tensors["text_embedding_projection.aggregate_embed.weight"] = np.ones((2,), np.float32)
    path = tmp_path / "combined.safetensors"
    save_file(tensors, str(path), metadata=meta)

    read: list[str] = []
    real = source_mod.load_tensors  # every read of an official file goes through the weight source

    def spy(header, keys, dtype=mx.float32):
        read.extend(keys)
        return real(header, keys, dtype)

    monkeypatch.setattr(source_mod, "load_tensors", spy)
    load_transformer(path)
    assert read, "the loader read nothing"
    assert all(k.startswith(PREFIX) for k in read)
    assert not [k for k in read if "embeddings_connector" in k]
    assert len(read) == sum(1 for k in _read(TINY)[0] if k.startswith(PREFIX))


# ---------------------------------------------------------------------------------------- forward
def test_x0_is_latent_minus_velocity_times_per_token_timestep(model):
    video, audio = _inputs()
    v_vel, a_vel = model(video, audio)
    v0, a0 = model.denoise(video, audio)
    ts = np.array(video.timesteps)
    np.testing.assert_allclose(np.array(v0), np.array(video.latent) - np.array(v_vel) * ts, rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.array(a0), np.array(audio.latent) - np.array(a_vel) * np.array(audio.timesteps),
                               rtol=0, atol=1e-6)
    clean = ts[0, :, 0] == 0  # the conditioned first latent frame: x0 is the latent itself
    assert clean.any() and not clean.all()
    np.testing.assert_array_equal(np.array(v0)[0, clean], np.array(video.latent)[0, clean])
    assert not np.allclose(np.array(v0)[0, ~clean], np.array(video.latent)[0, ~clean])


def test_batched_perturbations_equal_separate_passes(model):
    perts = [Perturbation(), Perturbation.stg([1]), Perturbation.isolate_modalities(),
             Perturbation(video_self_attn=ALL, v2a_cross_attn=[0])]
    v1, a1 = _inputs(1)
    singles = [model.denoise(v1, a1, p) for p in perts]
    v4, a4 = _inputs(len(perts))
    bv, ba = model.denoise(v4, a4, perts)
    for i, (sv, sa) in enumerate(singles):
        np.testing.assert_allclose(np.array(bv[i]), np.array(sv[0]), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np.array(ba[i]), np.array(sa[0]), rtol=1e-5, atol=1e-5)
    # the perturbations really change the result
    assert not np.allclose(np.array(singles[0][0]), np.array(singles[1][0]), atol=1e-4)
    assert not np.allclose(np.array(singles[0][1]), np.array(singles[2][1]), atol=1e-4)
    with pytest.raises(ValueError, match="one per batch element"):
        model.denoise(v4, a4, perts[:2])


def test_query_chunking_does_not_change_the_result(model):
    video, audio = _inputs()
    t = video.latent.shape[1]
    mask = (np.random.default_rng(0).random((1, t, t)) > 0.3).astype(np.float32)
    video = replace(video, attention_mask=mx.array(mask))
    tables = model.positional_tables(video.positions, audio.positions)
    try:
        model.set_query_chunk(None)
        ref = model(video, audio, tables=tables)
        model.set_query_chunk(5)  # 24 video / 9 audio queries -> uneven chunks
        got = model(video, audio, tables=tables)
    finally:
        model.set_query_chunk(DEFAULT_QUERY_CHUNK)
    for r, g in zip(ref, got):
        np.testing.assert_allclose(np.array(g), np.array(r), rtol=1e-5, atol=1e-6)
