"""fp8 checkpoints load through every loader (scales consumed, strictness kept), and LoRAs fuse as W + s * B @ A.

Parity with the official fp8 and LoRA code is in tests/models/test_parity.py (fixtures transformer_fp8_cast,
transformer_fp8_scaled, transformer_lora); these tests cover the layouts and failure modes around it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from ltx2.parity import load_fixture, rel_err
from ltx2.parity.transformer import _modality, denoise_av_rule_1_0_0
from ltx2.parity.weights import lora_files
from ltx2.models.tiny import ensure_tiny_model
from ltx2.models.transformer import load_transformer
from ltx2.models.weights import CheckpointError, load_tensors, read_header

from support import fp8_pair, write_raw

SEED0 = Path(__file__).parents[1] / "fixtures" / "seed0"


def same_params(a, b) -> None:
    pa, pb = dict(tree_flatten(a.parameters())), dict(tree_flatten(b.parameters()))
    assert pa.keys() == pb.keys()
    for k in pa:
        assert mx.array_equal(pa[k], pb[k]).item(), k


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    return ensure_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def fp8_tiny(tiny, tmp_path_factory) -> dict[str, Path]:
    """The tiny model's checkpoint, upsampler and Gemma folder in fp8, each with its dequantised float32 twin."""
    d = tmp_path_factory.mktemp("fp8")
    out = {}
    for role in ("checkpoint", "spatial_upsampler"):
        out[role], out[role + "_twin"] = d / f"{role}.safetensors", d / f"{role}_twin.safetensors"
        fp8_pair(tiny[role], out[role], out[role + "_twin"])
    for tag in ("gemma", "gemma_twin"):
        shutil.copytree(tiny["gemma"], d / tag)
    for shard in sorted(tiny["gemma"].glob("*.safetensors")):
        fp8_pair(shard, d / "gemma" / shard.name, d / "gemma_twin" / shard.name)
    out["gemma"], out["gemma_twin"] = d / "gemma", d / "gemma_twin"
    return out


def test_scales_are_consumed_and_applied(tmp_path):
    w = np.array([[0.5, -1.0], [0.25, 0.125]], np.float32)
    q = np.array(mx.to_fp8(mx.array(w)))
    p = write_raw(tmp_path / "m.safetensors", {
        "a.weight": ("F8_E4M3", q), "a.weight_scale": ("F32", np.array(0.01, np.float32).reshape(())),
        "a.input_scale": ("F32", np.array(0.5, np.float32).reshape(())),
        "a.bias": ("F8_E4M3", q[0]),  # cast-only: no scale
        "b.weight": ("F8_E4M3", q), "b.scale_weight": ("F32", np.array([2.0, 3.0], np.float32)),  # per output row
    }, {})
    h = read_header(p)
    assert sorted(h.tensors) == ["a.bias", "a.weight", "b.weight"]  # only parameters are listed
    assert sorted(h.companions) == ["a.input_scale", "a.weight_scale", "b.scale_weight"]
    t = load_tensors(h, ["a.weight", "a.bias", "b.weight"], mx.float32)
    np.testing.assert_array_equal(np.array(t["a.weight"]), w * np.float32(0.01))
    np.testing.assert_array_equal(np.array(t["a.bias"]), w[0])
    np.testing.assert_array_equal(np.array(t["b.weight"]), w * np.array([[2.0], [3.0]], np.float32))
    assert load_tensors(h, ["a.weight"], None)["a.weight"].dtype == mx.bfloat16  # "as stored": bf16, as upstream


def test_a_scale_of_the_wrong_shape_or_truncated_is_refused(tmp_path):
    q = np.zeros((2, 3), np.uint8)
    p = write_raw(tmp_path / "m.safetensors", {"a.weight": ("F8_E4M3", q),
                                               "a.weight_scale": ("F32", np.ones(3, np.float32))}, {})
    with pytest.raises(CheckpointError, match=r"a.weight: fp8 scale of shape \(3,\) does not fit"):
        load_tensors(read_header(p), ["a.weight"])
    p2 = write_raw(tmp_path / "t.safetensors", {"a.weight": ("F8_E4M3", q),
                                                "a.weight_scale": ("F32", np.ones((), np.float32))}, {})
    p2.write_bytes(p2.read_bytes()[:-2])  # the scale (stored last) is cut
    h = read_header(p2)
    assert h.truncated() == ["a.weight_scale"]
    with pytest.raises(CheckpointError, match="a.weight_scale.*truncated"):
        load_tensors(h, ["a.weight"])


@pytest.mark.parametrize("loader", ["transformer", "embeddings", "video_encoder", "video_decoder", "audio_encoder",
                                    "audio_decoder", "vocoder", "upsampler", "gemma"])
def test_every_loader_reads_fp8_checkpoints(fp8_tiny, loader):
    from ltx2.models.audio_vae.loading import load_audio_decoder, load_audio_encoder
    from ltx2.models.text.embeddings import load_embeddings_processor
    from ltx2.models.text.gemma import load_gemma
    from ltx2.models.upsampler.loader import load_upsampler
    from ltx2.models.video_vae.loading import load_video_decoder, load_video_encoder
    from ltx2.models.vocoder.loading import load_vocoder

    fn, role = {"transformer": (load_transformer, "checkpoint"), "embeddings": (load_embeddings_processor, "checkpoint"),
                "video_encoder": (load_video_encoder, "checkpoint"), "video_decoder": (load_video_decoder, "checkpoint"),
                "audio_encoder": (load_audio_encoder, "checkpoint"), "audio_decoder": (load_audio_decoder, "checkpoint"),
                "vocoder": (load_vocoder, "checkpoint"), "upsampler": (load_upsampler, "spatial_upsampler"),
                "gemma": (load_gemma, "gemma")}[loader]
    model = fn(fp8_tiny[role])
    if loader == "gemma":
        model = model.model
    twin = fn(fp8_tiny[role + "_twin"])
    same_params(model, twin.model if loader == "gemma" else twin)


def test_a_stray_scale_is_an_unexpected_tensor(tiny, tmp_path):
    extra = {"model.diffusion_model.ghost.weight_scale": ("F32", np.ones((), np.float32))}
    fp8_pair(tiny["checkpoint"], tmp_path / "c.safetensors", tmp_path / "t.safetensors", extra)
    with pytest.raises(CheckpointError, match="unexpected tensor ghost.weight_scale"):
        load_transformer(tmp_path / "c.safetensors")


def test_several_loras_on_an_fp8_checkpoint_fuse_exactly():
    """The official fp8 layout (fixture transformer_fp8_scaled) with both LoRAs of transformer_lora (same
    config): every adapted weight is dequant(W) + sum(s * B @ A), checked in float64."""
    z = load_fixture(SEED0, "transformer_lora")
    loras = list(zip(lora_files(SEED0, "transformer_lora"), [float(s) for s in z["lora_strengths"]]))
    ckpt = SEED0 / "transformer_fp8_scaled.safetensors"
    fused = dict(tree_flatten(load_transformer(ckpt, loras=loras).parameters()))
    base = dict(tree_flatten(load_transformer(ckpt).parameters()))
    expect = {k: np.array(v, np.float64) for k, v in base.items()}
    from ltx2.models.transformer.loader import PREFIX, TRANSFORMER_KEYMAP

    checked = 0
    for path, s in loras:
        h = read_header(path)
        t = load_tensors(h, list(h.tensors), mx.float32)
        for ka in [k for k in t if k.endswith(".lora_A.weight")]:
            stem = ka[len("diffusion_model."): -len(".lora_A.weight")]
            name = TRANSFORMER_KEYMAP.module_name(PREFIX + stem + ".weight")
            b = np.array(t[ka.replace("lora_A", "lora_B")], np.float64)
            expect[name] = expect[name] + s * (b @ np.array(t[ka], np.float64))
            checked += 1
    assert checked > 50
    scaled = [k for k, i in read_header(ckpt).tensors.items() if i.scale is not None]
    assert scaled  # the base really is scaled fp8
    for k, v in fused.items():
        np.testing.assert_allclose(np.array(v, np.float64), expect[k], rtol=2e-6, atol=1e-7, err_msg=k)


def test_lora_fixture_is_meaningful_and_the_bf16_base_reads_exactly():
    """Without LoRAs our load of the bf16 checkpoint gives the official unfused output; the LoRAs move it a lot."""
    z = load_fixture(SEED0, "transformer_lora")
    # the references are ltx-core 1.0.0's, made with its A/V AdaLN rule (see parity/weights.py)
    v, a = denoise_av_rule_1_0_0(load_transformer(SEED0 / "transformer_lora.safetensors"), _modality(z, "video"),
                                 _modality(z, "audio"))
    assert rel_err(v, z["base_video_x0"]) < 1e-4 and rel_err(a, z["base_audio_x0"]) < 1e-4
    assert rel_err(z["exact_video_x0"], z["base_video_x0"]) > 0.05
    assert rel_err(z["exact_audio_x0"], z["base_audio_x0"]) > 0.05


def test_a_lora_for_another_model_names_what_does_not_fit(tiny):
    lora = lora_files(SEED0, "transformer_lora")[0]  # made for a 3-block, narrower transformer
    with pytest.raises(CheckpointError, match="transformer_blocks.2.attn1"):
        load_transformer(tiny["checkpoint"], loras=[(lora, 1.0)])
