"""Half-precision compute (``compute: bfloat16 | float16``): the networks compute at that width with the float32
islands of the official code, and match the official code run in bf16 / fp16.

The parity itself (each network and the two-stage tiny pipeline against ltx-core 1.0.0 in bf16 and fp16, at
tolerances derived from what those dtypes cost the official code) runs on tests/fixtures/half in
tests/models/test_parity.py, like every fixture set; here: that those fixtures and their checks are what they claim,
and the dtype plumbing (what runs at which width) that parity alone would not pin down.
"""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from ltx2.models.audio_vae import load_audio_decoder, load_audio_encoder
from ltx2.models.precision import auto_compute, cast_floating, compute_dtype, norm_float32
from ltx2.models.text.embeddings import load_embeddings_processor
from ltx2.models.tiny import ensure_tiny_model
from ltx2.models.transformer import ModalityInput, Perturbation, load_transformer
from ltx2.models.transformer.streaming import load_transformer_mode
from ltx2.models.upsampler import load_upsampler
from ltx2.models.video_vae import load_video_decoder, load_video_encoder
from ltx2.models.video_vae.layers import GroupNorm1
from ltx2.models.vocoder import VocoderWithBWE, load_vocoder
from ltx2.models.weights.modes import WeightsMode
from ltx2.parity import CHECKS, fixture_names, run_fixture
from ltx2.parity.precision import HALF_TOL_FACTOR
from ltx2.spec.precision import COMPUTE, compute_itemsize

HALF = Path(__file__).parents[1] / "fixtures" / "half"
DTYPES = {"bfloat16": mx.bfloat16, "float16": mx.float16}


def _floats(module: nn.Module) -> set:
    return {v.dtype for _, v in tree_flatten(module.parameters()) if mx.issubdtype(v.dtype, mx.floating)}


def test_the_half_set_covers_every_network_and_the_pipeline() -> None:
    names = set(fixture_names(HALF))
    assert names == {"transformer_ltx2_half", "video_vae_half", "video_vae_timestep_cond_half", "audio_vae_half",
                     "vocoder_half", "upsampler_x2_half", "connector_ltx2_half", "pipeline_two_stage_tiny_half"}
    assert names <= set(CHECKS)
    for name in names:  # the official code ran in both half dtypes (torch's CPU kernels took fp16 too)
        with np.load(HALF / f"{name}.npz") as z:
            assert any(k.startswith("bf16_") for k in z.files) and any(k.startswith("fp16_") for k in z.files), name
            assert not any(k.endswith("_unsupported") for k in z.files), name


def test_half_rows_use_tolerances_derived_from_the_official_distance() -> None:
    """Each half row's tolerance is HALF_TOL_FACTOR x the official half-vs-float32 distance of that very output, and
    the official half outputs are really half-precision results (bf16 visibly further from float32 than fp16)."""
    rows = run_fixture(HALF, "transformer_ltx2_half")
    with np.load(HALF / "transformer_ltx2_half.npz") as z:
        ref32 = z["f32_out_video_x0"].astype(np.float64)
        d = {t: np.linalg.norm(z[f"{t}_out_video_x0"] - ref32) / np.linalg.norm(ref32) for t in ("bf16", "fp16")}
    assert 1e-3 < d["bf16"] < 3e-2 and d["fp16"] < d["bf16"] / 4
    by_name = {r.output: r for r in rows}
    for tag, label in (("bf16", "bfloat16"), ("fp16", "float16")):
        for other in (f"official {label}", "ours float32"):
            r = by_name[f"out_video_x0 in {label} vs {other}"]
            assert r.status == "pass" and r.tol == pytest.approx(HALF_TOL_FACTOR * d[tag], rel=1e-6)
    assert by_name["out_video_x0 in float32 vs official float32"].tol == 1e-4


@pytest.mark.parametrize("compute", ["bfloat16", "float16"])
def test_networks_hold_their_weights_and_compute_in_the_half_dtype(compute) -> None:
    dtype = DTYPES[compute]
    z = dict(np.load(HALF / "video_vae_half.npz"))
    enc = load_video_encoder(HALF / "video_vae_half.safetensors", dtype)
    dec = load_video_decoder(HALF / "video_vae_half.safetensors", dtype)
    assert _floats(enc) == _floats(dec) == {dtype} and enc.dtype == dec.dtype == dtype
    latent = mx.array(np.moveaxis(z["decoder_in_latent"], 1, -1))  # float32 in: cast on entry
    assert dec(latent).dtype == dtype
    assert enc(mx.array(np.moveaxis(z["encoder_in_video"], 1, -1))).dtype == dtype
    a = dict(np.load(HALF / "audio_vae_half.npz"))
    assert load_audio_decoder(HALF / "audio_vae_half.safetensors", dtype)(mx.array(a["decoder_in_latent"])).dtype \
        == dtype
    assert load_audio_encoder(HALF / "audio_vae_half.safetensors", dtype)(
        mx.array(a["encoder_in_spectrogram"])).dtype == dtype
    v = dict(np.load(HALF / "vocoder_half.npz"))
    assert load_vocoder(HALF / "vocoder_half.safetensors", dtype)(mx.array(v["in_mel"])).dtype == dtype
    u = dict(np.load(HALF / "upsampler_x2_half.npz"))
    up = load_upsampler(HALF / "upsampler_x2_half.safetensors", dtype)
    assert up(mx.array(u["in_latent"]).transpose(0, 2, 3, 4, 1)).dtype == dtype
    c = dict(np.load(HALF / "connector_ltx2_half.npz"))
    states = [mx.array(c[f"hidden_state_{i}"]) for i in range(4)]
    ctx = load_embeddings_processor(HALF / "connector_ltx2_half.safetensors", dtype)(states,
                                                                                      mx.array(c["attention_mask"]))
    assert ctx.video.dtype == ctx.audio.dtype == dtype


def _transformer_inputs() -> tuple[ModalityInput, ModalityInput]:
    z = dict(np.load(HALF / "transformer_ltx2_half.npz"))

    def m(p: str) -> ModalityInput:
        return ModalityInput(latent=mx.array(z[f"{p}_latent"]), sigma=mx.array(z[f"{p}_sigma"]),
                             timesteps=mx.array(z[f"{p}_timesteps"]), positions=z[f"{p}_positions"],
                             context=mx.array(z[f"{p}_context"]))

    return m("video"), m("audio")


def test_the_transformer_computes_in_bf16_and_forms_x0_in_float32() -> None:
    """Velocities come out at the compute width; x0 = latent - velocity * sigma is formed from the float32 latent
    (the sampler's state stays float32), so it is float32 and exactly that formula on the bf16 velocity."""
    model = load_transformer(HALF / "transformer_ltx2_half.safetensors", mx.bfloat16)
    assert model.dtype == mx.bfloat16 and _floats(model) == {mx.bfloat16}
    video, audio = _transformer_inputs()
    v_vel, a_vel = model(video, audio)
    assert v_vel.dtype == a_vel.dtype == mx.bfloat16
    v0, a0 = model.denoise(video, audio)
    assert v0.dtype == a0.dtype == mx.float32
    ts = video.timesteps.reshape(1, -1, 1)
    assert mx.array_equal(v0, video.latent - v_vel.astype(mx.float32) * ts)


def test_stacked_guided_passes_stay_in_bf16() -> None:
    """A batch mixing an STG-perturbed row with plain ones (the guided passes stacked in one call) masks the
    perturbed row per element: that mask is at the activations' width, so nothing widens to float32 midway."""
    model = load_transformer(HALF / "transformer_ltx2_half.safetensors", mx.bfloat16)
    video, audio = _transformer_inputs()

    def two(m: ModalityInput) -> ModalityInput:
        return ModalityInput(latent=mx.concatenate([m.latent] * 2), sigma=m.sigma,
                             timesteps=mx.concatenate([m.timesteps] * 2), positions=np.concatenate([m.positions] * 2),
                             context=mx.concatenate([m.context] * 2))

    v, a = model(two(video), two(audio), [Perturbation.none(), Perturbation.stg([1])])
    assert v.dtype == a.dtype == mx.bfloat16
    plain, _ = model(video, audio)
    stg, _ = model(video, audio, Perturbation.stg([1]))
    # each row as its own call gives it (up to batched-matmul rounding in bf16)
    assert mx.allclose(v[:1], plain, rtol=0, atol=1e-2) and mx.allclose(v[1:], stg, rtol=0, atol=1e-2)


def test_streamed_and_resident_agree_in_bf16_for_every_weights_mode() -> None:
    """The compute width applies to every weights mode the same way: streamed == resident exactly, and a quantised
    layer's scales and biases are cast (its matmul then runs at bf16) while its packed weights stay packed."""
    ckpt = ensure_tiny_model()["checkpoint"]
    video, audio = _inputs_for(load_transformer(ckpt).config)
    for precision in ("float32", "bfloat16", "q8"):
        resident = load_transformer_mode(ckpt, WeightsMode(precision, False, 32), dtype=mx.bfloat16)
        streamed = load_transformer_mode(ckpt, WeightsMode(precision, True, 32), dtype=mx.bfloat16)
        a, b = resident.denoise(video, audio), streamed.denoise(video, audio)
        assert all(mx.array_equal(x, y) for x, y in zip(a, b)), precision
        assert _floats(resident) == {mx.bfloat16}, precision
        if precision == "q8":
            q = resident.transformer_blocks[0].attn1.to_q
            assert isinstance(q, nn.QuantizedLinear) and q.weight.dtype == mx.uint32 and q.scales.dtype == mx.bfloat16


def _inputs_for(cfg) -> tuple[ModalityInput, ModalityInput]:
    rng = np.random.RandomState(5)

    def m(t: int, c: int, axes: int) -> ModalityInput:
        pos = np.zeros((1, axes, t, 2), np.float32)
        pos[..., 0] = np.arange(t)
        pos[..., 1] = pos[..., 0] + 1
        return ModalityInput(latent=mx.array(rng.randn(1, t, c).astype(np.float32)), sigma=mx.array(0.6),
                             timesteps=mx.full((1, t), 0.6), positions=pos,
                             context=mx.array(rng.randn(1, 4, cfg.caption_channels).astype(np.float32)))

    return m(6, cfg.in_channels, 3), m(5, cfg.audio_in_channels, 1)


def test_cast_floating_leaves_integers_and_packed_weights() -> None:
    layer = nn.QuantizedLinear(64, 32, group_size=32, bits=8)
    ids = mx.arange(4)
    module = nn.Module()
    module.layer, module.ids = layer, ids
    cast_floating(module, mx.float16)
    assert module.layer.weight.dtype == mx.uint32 and module.ids.dtype == ids.dtype
    assert module.layer.scales.dtype == module.layer.biases.dtype == module.layer.bias.dtype == mx.float16


def test_group_norm_statistics_are_a_float32_island() -> None:
    """The VAE's one-group GroupNorm on a bf16 input with a large mean: bf16 spaces values near 1000 by 4, so
    statistics formed in bf16 would lose the small variance; formed in float32 (as torch's kernel does for half
    inputs) the result equals the float32 norm of the same bf16 values up to the output's rounding."""
    x = (1000.0 + mx.random.normal((1, 2, 3, 4, 8), key=mx.random.key(0)) * 8.0).astype(mx.bfloat16)
    norm = GroupNorm1(8)
    want = norm(x.astype(mx.float32))
    got = cast_floating(norm, mx.bfloat16)(x)  # as a network loaded in bf16 holds it
    assert got.dtype == mx.bfloat16
    assert float(mx.abs(got.astype(mx.float32) - want).max()) < 0.02
    naive = GroupNorm1._normalize(x)  # the same formula left in bf16
    assert float(mx.abs(naive.astype(mx.float32) - want).max()) > 0.1
    assert norm_float32(lambda a: a * 2, mx.ones(3)).dtype == mx.float32  # float32 in: untouched


def test_the_ltx23_vocoder_with_bandwidth_extension_stays_float32() -> None:
    """v1.2.0 runs VocoderWithBWE under float32 autocast whatever its dtype: so does ours (an island), on a half
    input too (the audio decoder's mel arrives at the compute width)."""
    files = ensure_tiny_model(variant="tiny-2.3")
    f32 = load_vocoder(files["checkpoint"], mx.float32)
    bf16 = load_vocoder(files["checkpoint"], mx.bfloat16)
    assert isinstance(bf16, VocoderWithBWE) and _floats(bf16) == {mx.float32}
    mel = (mx.random.normal((1, 2, 6, 64), key=mx.random.key(2)) - 4.0).astype(mx.bfloat16)
    wave = bf16(mel)
    assert wave.dtype == mx.float32 and mx.array_equal(f32(mel.astype(mx.float32)), wave)


def test_compute_names_and_widths() -> None:
    assert COMPUTE == ("float32", "bfloat16", "float16")
    assert [compute_itemsize(c) for c in COMPUTE] == [4, 2, 2]
    assert [compute_dtype(c) for c in COMPUTE] == [mx.float32, mx.bfloat16, mx.float16]
    with pytest.raises(ValueError, match="compute='float64'"):
        compute_dtype("float64")
    # MLX's default device decides `auto`: on this project's CPU machines, float32
    assert auto_compute() == ("bfloat16" if mx.default_device().type == mx.DeviceType.gpu else "float32")
