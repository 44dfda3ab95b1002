"""LTX-2.3 transformer paths and the v1.2.0 audio<->video AdaLN rule (both versions).

The 2.3 checkpoint used here is built from the committed header-only fixture (tests/fixtures/seed0/
transformer_ltx23.safetensors: the official key names, shapes and config of ltx-core's 2.3 layout), with
deterministic random tensors, so the resident, streamed and converted paths run on the real 2.3 layout
without the oracle. Numerical equality with the official code: test_parity_v12.py (transformer_ltx23).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from ltx2.models.tiny.weights import init_tensor, write_safetensors
from ltx2.models.transformer import LTX2Transformer, ModalityInput, Perturbation, TransformerConfig, load_transformer
from ltx2.models.transformer.attention import Attention
from ltx2.models.transformer.loader import TRANSFORMER_KEYMAP, to_checkpoint
from ltx2.models.transformer.streaming import StreamedTransformer, load_transformer_mode
from ltx2.models.weights import read_header
from ltx2.models.weights.conversion import convert_checkpoint
from ltx2.models.weights.modes import WeightsMode
from ltx2.parity import load_fixture, rel_err
from ltx2.parity.transformer import OLD_AV_RULE, _modality, denoise_av_rule_1_0_0

SEED0 = Path(__file__).parents[1] / "fixtures" / "seed0"
HEADER23 = SEED0 / "transformer_ltx23.safetensors"  # header-only
TINY2 = SEED0 / "transformer_ltx2.safetensors"
PERTURB = [Perturbation.none(), Perturbation.stg([1])]


@pytest.fixture(scope="module")
def ckpt23(tmp_path_factory) -> Path:
    """A complete float32 2.3 checkpoint with the committed header's keys, shapes and metadata."""
    h = read_header(HEADER23)
    tensors = {k: init_tensor("tf23-test", k, tuple(t.shape)) for k, t in h.tensors.items()}
    path = tmp_path_factory.mktemp("ltx23") / "transformer_ltx23.safetensors"
    write_safetensors(path, tensors, h.metadata, dtype="F32")
    return path


def _inputs(cfg: TransformerConfig, batch: int = 2, seed: int = 3) -> tuple[ModalityInput, ModalityInput]:
    """Random inputs with per-token timesteps that differ from the other stream's sigma (where the rule shows)."""
    rng = np.random.RandomState(seed)

    def positions(axes: int, t: int) -> np.ndarray:
        p = np.zeros((batch, axes, t, 2), np.float32)
        p[:, :, :, 0] = rng.randint(0, 4, (1, axes, t))
        p[:, :, :, 1] = p[:, :, :, 0] + 1
        return p

    def m(t: int, c: int, axes: int, width: int) -> ModalityInput:
        sigma = rng.rand(batch).astype(np.float32)
        mask = (rng.rand(batch, t) > 0.3).astype(np.float32)
        return ModalityInput(latent=mx.array(rng.randn(batch, t, c).astype(np.float32)), sigma=mx.array(sigma),
                             timesteps=mx.array(mask * sigma[:, None]), positions=positions(axes, t),
                             context=mx.array(rng.randn(batch, 5, width).astype(np.float32)))

    vw = cfg.caption_channels if cfg.caption_projection else cfg.inner_dim
    aw = cfg.caption_channels if cfg.caption_projection else cfg.audio_inner_dim
    return m(12, cfg.in_channels, 3, vw), m(7, cfg.audio_in_channels, 1, aw)


def _max_diff(a, b) -> float:
    return max(float(mx.abs(x - y).max()) for x, y in zip(a, b))


def _rel(a: mx.array, b: mx.array) -> float:
    return float(mx.linalg.norm(a - b) / mx.linalg.norm(b))


# ------------------------------------------------------------------------------------------ layout
def test_the_key_map_covers_the_official_2_3_layout_both_ways(ckpt23):
    h = read_header(HEADER23)
    model = LTX2Transformer(TransformerConfig.from_config(h.config()))
    # our 2.3 model, written under the official names, is exactly the official file's tensor table
    assert {k: tuple(v.shape) for k, v in to_checkpoint(model).items()} == {
        k: tuple(t.shape) for k, t in h.tensors.items()}
    # and the file loads strictly, every tensor where the key map puts it
    loaded = dict(tree_flatten(load_transformer(ckpt23).parameters()))
    written = read_header(ckpt23)
    assert len(loaded) == len(written.tensors)
    gate = "model.diffusion_model.transformer_blocks.1.audio_to_video_attn.to_gate_logits.weight"
    assert TRANSFORMER_KEYMAP.module_name(gate) == "transformer_blocks.1.audio_to_video_attn.to_gate_logits.weight"
    np.testing.assert_array_equal(np.array(loaded["transformer_blocks.1.audio_to_video_attn.to_gate_logits.weight"]),
                                  init_tensor("tf23-test", gate, tuple(written.tensors[gate].shape)))
    assert "prompt_adaln_single.timestep_embedder.linear_1.weight" in loaded
    assert not [k for k in loaded if "caption_projection" in k]


# ------------------------------------------------------------------------------------------ paths
def test_2_3_streamed_equals_resident_at_every_precision(ckpt23):
    ref_model = load_transformer(ckpt23)
    v, a = _inputs(ref_model.config)
    ref = ref_model(v, a, PERTURB)
    streamed = load_transformer_mode(ckpt23, WeightsMode(streaming=True))
    assert isinstance(streamed, StreamedTransformer)
    assert _max_diff(streamed(v, a, PERTURB), ref) == 0.0
    assert _max_diff(load_transformer_mode(ckpt23, WeightsMode())(v, a, PERTURB), ref) == 0.0
    for precision in ("bfloat16", "q8"):
        resident = load_transformer_mode(ckpt23, WeightsMode(precision, group_size=32))
        got = resident(v, a, PERTURB)
        assert _max_diff(load_transformer_mode(ckpt23, WeightsMode(precision, True, 32))(v, a, PERTURB), got) == 0.0
        err = max(_rel(x, y) for x, y in zip(got, ref))
        assert 0 < err < {"bfloat16": 0.01, "q8": 0.02}[precision]


def test_2_3_converted_float_is_lossless_and_q8_streams(ckpt23, tmp_path):
    ref_model = load_transformer(ckpt23)
    v, a = _inputs(ref_model.config)
    ref = ref_model(v, a, PERTURB)
    convert_checkpoint(ckpt23, tmp_path / "float", files=["transformer"])
    assert _max_diff(load_transformer(tmp_path / "float" / "transformer.safetensors")(v, a, PERTURB), ref) == 0.0
    convert_checkpoint(ckpt23, tmp_path / "q8", bits=8, group_size=32, files=["transformer"])
    q8 = tmp_path / "q8" / "transformer.safetensors"
    resident = load_transformer(q8)
    got = resident(v, a, PERTURB)
    assert _max_diff(load_transformer_mode(q8, WeightsMode("q8", True, 32))(v, a, PERTURB), got) == 0.0
    assert max(_rel(x, y) for x, y in zip(got, ref)) < 0.02


# ------------------------------------------------------------------------------------------ semantics
@pytest.mark.parametrize("version", ["2.0", "2.3"])
def test_av_adaln_scale_shift_follows_own_timesteps_and_gate_the_other_sigma(ckpt23, version):
    """v1.2.0: a token's a2v/v2a scale/shift comes from its own timestep, the gate from the other stream's sigma."""
    model = load_transformer(TINY2 if version == "2.0" else ckpt23)
    v, a = _inputs(model.config, batch=1)
    vs, as_ = model.prepare(v, a)
    assert vs.cross_modulation.shape == (1, 12, 4 * model.config.inner_dim)  # one row per token
    # row j is the scale/shift AdaLN of token j's timestep
    want, _ = model.av_ca_video_scale_shift_adaln_single(v.timesteps.reshape(1, -1) * 1000)
    np.testing.assert_array_equal(np.array(vs.cross_modulation), np.array(want))
    # the other stream's sigma moves only the gate (and, in 2.3, nothing of this stream's own AdaLN)
    vs2, as2 = model.prepare(v, replace(a, sigma=a.sigma * 0.5))
    assert mx.array_equal(vs2.cross_modulation, vs.cross_modulation).item()
    assert not mx.allclose(vs2.cross_gate, vs.cross_gate).item()
    assert mx.array_equal(as2.cross_modulation, as_.cross_modulation).item()
    # one token's own timestep moves only that token's row
    ts = np.array(v.timesteps)
    ts[0, 4] = 0.123
    vs3, _ = model.prepare(replace(v, timesteps=mx.array(ts)), a)
    changed = np.abs(np.array(vs3.cross_modulation) - np.array(vs.cross_modulation)).max(axis=-1)[0]
    assert changed[4] > 0 and np.all(np.delete(changed, 4) == 0)
    if version == "2.3":  # the prompt AdaLN reads the stream's own sigma
        vs4, _ = model.prepare(replace(v, sigma=v.sigma * 0.5), a)
        assert not mx.allclose(vs4.prompt_modulation, vs.prompt_modulation).item()
        assert mx.array_equal(vs4.modulation, vs.modulation).item()
    else:
        assert vs.prompt_modulation is None


def test_gated_attention_scales_each_head_by_two_sigmoid_of_its_logit():
    mx.random.seed(0)
    gated = Attention(16, 2, 8, gated=True)
    plain = Attention(16, 2, 8)
    plain.update({k: v for k, v in gated.parameters().items() if k != "to_gate_logits"})
    x = mx.random.normal((1, 5, 16))
    logits = gated.to_gate_logits(x)  # (1, 5, 2)
    g = 2 * mx.sigmoid(logits)
    for kw in ({}, {"value_only": True}):  # the STG value path is gated too
        # to_out is linear: gating head h of its input == scaling the matching to_out columns per token
        inner_gated = mx.repeat(g, 8, axis=-1)  # (1, 5, 16)
        got = gated(x, **kw)
        plain_inner = []
        plain.to_out = _Capture(plain.to_out, plain_inner)
        plain(x, **kw)
        plain.to_out = plain.to_out.inner
        want = gated.to_out(plain_inner[0] * inner_gated)
        np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-5, atol=1e-6)
    # zero logits: gates of exactly 1, the ungated attention
    gated.to_gate_logits.weight = mx.zeros_like(gated.to_gate_logits.weight)
    gated.to_gate_logits.bias = mx.zeros_like(gated.to_gate_logits.bias)
    np.testing.assert_allclose(np.array(gated(x)), np.array(plain(x)), rtol=1e-6, atol=1e-6)


class _Capture:
    """Stands in for a Linear and records its input."""

    def __init__(self, inner, sink: list):
        self.inner, self.sink = inner, sink

    def __call__(self, x):
        self.sink.append(x)
        return self.inner(x)


def test_the_left_out_1_0_0_comparisons_differ_only_by_the_av_rule():
    """The 1.0.0 transformer outputs that parity leaves out (parity.transformer.OLD_AV_RULE) match once the 1.0.0
    rule is replayed, and the v1.2.0 rule moves them well past the tolerance: the rule is all that differs."""
    z = load_fixture(SEED0, "transformer_ltx2")
    model = load_transformer(TINY2)
    v, a = _modality(z, "video"), _modality(z, "audio")
    old = denoise_av_rule_1_0_0(model, v, a)
    new = model.denoise(v, a)
    for m, got_old, got_new in zip(("video", "audio"), old, new):
        assert f"out_{m}_x0" in OLD_AV_RULE
        assert rel_err(got_old, z[f"out_{m}_x0"]) < 1e-4
        assert rel_err(got_new, z[f"out_{m}_x0"]) > 1e-3
