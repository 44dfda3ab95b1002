"""`ltx2 convert` and the converted-file format, on the embedded tiny model.

Float conversion must be lossless (the tiny model is bf16 like the official files); q8 / q4 files must
load quantised where the policy says and float elsewhere, stay close to float, and be smaller; LoRA
fusion at conversion must equal LoRA fusion on load.

Error bounds (relative L2 error of the outputs against the float model, group size 32, which quantises
every block layer of the tiny widths; measured on these inputs: transformer q8 0.4% video / 0.6% audio,
q4 7% / 10%; Gemma's last hidden state q8 1.2%, q4 27%). A broken quantisation (wrong group size or
bits on load, scales mixed up, a transposed weight) gives errors of order 100%.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten
from safetensors.numpy import save_file
from typer.testing import CliRunner

from ltx2.cli.main import app
from ltx2.models.audio_vae import load_audio_decoder
from ltx2.models.text import TextEncoder, load_embeddings_processor, load_gemma
from ltx2.models.tiny import ensure_tiny_model
from ltx2.models.transformer import ModalityInput, load_transformer
from ltx2.models.upsampler import load_latent_statistics, load_upsampler
from ltx2.models.video_vae import load_video_decoder
from ltx2.models.vocoder import load_vocoder
from ltx2.models.weights import CheckpointError, read_header
from ltx2.models.weights.conversion import ConvertError, convert_checkpoint
from ltx2.models.networks import load_converted
from ltx2.models.transformer.loader import TRANSFORMER_KEYMAP
from ltx2.models.weights.converted import ConvertedWriter, is_converted, open_converted, save_converted
from ltx2.models.weights.source import open_source
from ltx2.models.weights.quantize import module_nbytes, quantize_module, quantized_nbytes
from ltx2.stages.sampling import audio_positions, video_positions

TRANSFORMER_Q8, TRANSFORMER_Q4 = 0.02, 0.20
GEMMA_Q8, GEMMA_Q4 = 0.05, 0.5


def rel(a: mx.array, b: mx.array) -> float:
    return float(mx.linalg.norm(a - b) / mx.linalg.norm(b))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    return ensure_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny")


@pytest.fixture(scope="module")
def converted(tiny, tmp_path_factory) -> dict[str, Path]:
    """Float (every part), q8 and q4 (transformer + text, group 32) conversions."""
    root = tmp_path_factory.mktemp("converted")
    out = {"float": root / "float", "q8": root / "q8", "q4": root / "q4"}
    convert_checkpoint(tiny["checkpoint"], out["float"], gemma=tiny["gemma"], upsampler=tiny["spatial_upsampler"],
                       files=["transformer", "text", "video_decoder", "video_encoder", "audio", "upsampler"])
    for bits in (8, 4):
        convert_checkpoint(tiny["checkpoint"], out[f"q{bits}"], gemma=tiny["gemma"], bits=bits, group_size=32,
                           files=["transformer", "text"])
    return out


def transformer_inputs(seed: int = 0) -> tuple[ModalityInput, ModalityInput]:
    rng = np.random.default_rng(seed)
    arr = lambda *s: mx.array(rng.standard_normal(s).astype(np.float32))  # noqa: E731
    video = ModalityInput(latent=arr(1, 32, 8), sigma=mx.array([0.7]), timesteps=mx.full((1, 32), 0.7),
                          positions=np.asarray(video_positions(2, 4, 4, 24.0)), context=arr(1, 16, 32))
    audio = ModalityInput(latent=arr(1, 8, 32), sigma=mx.array([0.4]), timesteps=mx.full((1, 8), 0.4),
                          positions=np.asarray(audio_positions(8)), context=arr(1, 16, 32))
    return video, audio


def token_ids(seed: int = 0) -> mx.array:
    return mx.array(np.random.default_rng(seed).integers(0, 400, (2, 24)).astype(np.int32))


# ------------------------------------------------------------------------------------------ float

def test_float_conversion_is_lossless_for_every_part(tiny, converted):
    d = converted["float"]
    manifest = json.loads((d / "manifest.json").read_text())
    assert manifest["roles"] == {
        "transformer": "transformer.safetensors", "gemma": "text.safetensors", "text_embeddings": "text.safetensors",
        "video_decoder": "video_decoder.safetensors", "latent_statistics": "video_decoder.safetensors",
        "video_encoder": "video_encoder.safetensors", "audio_decoder": "audio.safetensors",
        "vocoder": "audio.safetensors", "spatial_upsampler": "upsampler.safetensors"}
    ckpt = tiny["checkpoint"]
    v, a = transformer_inputs()
    for got, want in zip(load_transformer(d / "transformer.safetensors")(v, a), load_transformer(ckpt)(v, a)):
        assert mx.array_equal(got, want).item()
    ids = token_ids()
    for got, want in zip(load_gemma(d / "text.safetensors")(ids), load_gemma(tiny["gemma"])(ids)):
        assert mx.array_equal(got, want).item()
    # the conv networks: the same class from the same config with bit-equal parameters
    for load, f, src in ((load_embeddings_processor, "text", ckpt), (load_video_decoder, "video_decoder", ckpt),
                         (load_audio_decoder, "audio", ckpt), (load_vocoder, "audio", ckpt),
                         (load_upsampler, "upsampler", tiny["spatial_upsampler"])):
        got, want = load(d / f"{f}.safetensors"), load(src)
        assert type(got) is type(want)
        gp, wp = dict(tree_flatten(got.parameters())), dict(tree_flatten(want.parameters()))
        assert gp.keys() == wp.keys() and all(mx.array_equal(gp[k], wp[k]).item() for k in wp), f
    stats, ref = load_latent_statistics(d / "video_decoder.safetensors"), load_latent_statistics(ckpt)
    assert mx.array_equal(stats.mean, ref.mean).item() and mx.array_equal(stats.std, ref.std).item()


def test_text_encoder_runs_from_the_converted_text_file(tiny, converted):
    """text.safetensors holds Gemma and the connectors; the tokenizer is copied beside it."""
    text = converted["float"] / "text.safetensors"
    got = TextEncoder.load(text, text, max_length=128)("a red fox")
    want = TextEncoder.load(tiny["gemma"], tiny["checkpoint"], max_length=128)("a red fox")
    assert mx.array_equal(got.video, want.video).item() and mx.array_equal(got.audio, want.audio).item()


def test_converted_file_metadata_and_header_only_facts(tiny, converted):
    f = open_converted(converted["q8"] / "transformer.safetensors")
    info = f.parts["transformer"]
    assert (info.bits, info.group_size, info.dtype) == (8, 32, "bfloat16")
    assert info.source["checkpoint"]["size"] == tiny["checkpoint"].stat().st_size
    assert f.model_version == read_header(tiny["checkpoint"]).metadata["model_version"]
    assert f.config == read_header(tiny["checkpoint"]).config()  # stage code reads the config from the header
    # keys keep the official component prefix, names are module names, scales are float32
    h = f.header.tensors
    assert h["model.diffusion_model.transformer_blocks.0.attn1.to_q.weight"].dtype == "U32"
    assert h["model.diffusion_model.transformer_blocks.0.attn1.to_q.scales"].dtype == "F32"
    assert h["model.diffusion_model.patchify_proj.weight"].dtype == "BF16"
    assert f.nbytes("transformer") == module_nbytes(load_converted(f.path))
    assert not is_converted(tiny["checkpoint"]) and not is_converted(tiny["gemma"])


# ------------------------------------------------------------------------------------------ quantised

@pytest.mark.parametrize("bits,bound", [(8, TRANSFORMER_Q8), (4, TRANSFORMER_Q4)])
def test_quantised_transformer_keeps_policy_and_stays_close(tiny, converted, bits, bound):
    path = converted[f"q{bits}"] / "transformer.safetensors"
    model = load_transformer(path)
    blk = model.transformer_blocks[0]
    for layer in (blk.attn1.to_q, blk.attn2.to_out, blk.audio_to_video_attn.to_k, blk.ff.proj_in,
                  blk.audio_ff.proj_out):
        assert isinstance(layer, nn.QuantizedLinear) and (layer.bits, layer.group_size) == (bits, 32)
    for layer in (model.patchify_proj, model.proj_out, model.audio_proj_out, model.caption_projection.linear_1,
                  model.adaln_single.linear, model.adaln_single.timestep_embedder.linear_1,
                  model.av_ca_a2v_gate_adaln_single.linear):
        assert type(layer) is nn.Linear
    assert model.scale_shift_table.dtype == mx.float32 and blk.attn1.q_norm.weight.dtype == mx.float32
    v, a = transformer_inputs()
    got, want = model(v, a), load_transformer(tiny["checkpoint"])(v, a)
    for g, w in zip(got, want):
        assert mx.all(mx.isfinite(g)).item()
        assert rel(g, w) < bound
    assert path.stat().st_size < (converted["float"] / "transformer.safetensors").stat().st_size


@pytest.mark.parametrize("bits,bound", [(8, GEMMA_Q8), (4, GEMMA_Q4)])
def test_quantised_gemma_keeps_embeddings_and_norms_float(tiny, converted, bits, bound):
    path = converted[f"q{bits}"] / "text.safetensors"
    gemma = load_gemma(path)
    layer = gemma.model.layers[0]
    for lin in (layer.self_attn.q_proj, layer.self_attn.o_proj, layer.mlp.gate_proj, layer.mlp.down_proj):
        assert isinstance(lin, nn.QuantizedLinear) and lin.bits == bits
    assert type(gemma.model.embed_tokens) is nn.Embedding
    ids = token_ids()
    got, want = gemma(ids)[-1], load_gemma(tiny["gemma"])(ids)[-1]
    assert mx.all(mx.isfinite(got)).item() and rel(got, want) < bound
    emb = load_embeddings_processor(path)
    assert isinstance(emb.video_connector.blocks[0].attn.to_q, nn.QuantizedLinear)
    assert type(emb.feature_extractor.aggregate_embed) is nn.Linear
    assert path.stat().st_size < (converted["float"] / "text.safetensors").stat().st_size


def test_save_converted_quantises_like_quantize_module(tiny, tmp_path):
    """The API route (a loaded float module) gives the module quantize_module gives, through the file."""
    model = load_transformer(tiny["checkpoint"])
    save_converted(tmp_path / "t.safetensors", model, read_header(tiny["checkpoint"]).config(), part="transformer",
                   bits=4, group_size=32, dtype=mx.float32)
    direct = quantize_module(load_transformer(tiny["checkpoint"]), 4, 32)
    loaded = load_converted(tmp_path / "t.safetensors")
    a, b = dict(tree_flatten(direct.parameters())), dict(tree_flatten(loaded.parameters()))
    assert a.keys() == b.keys() and all(mx.array_equal(a[k], b[k]).item() for k in a)


def test_quantized_nbytes_matches_mlx(tmp_path):
    lin = nn.Linear(256, 96, bias=False)
    for bits, gs in ((8, 64), (4, 32), (4, 128)):
        q = nn.QuantizedLinear.from_linear(lin, gs, bits)
        assert quantized_nbytes((96, 256), bits, gs) == module_nbytes(q)
    with pytest.raises(ValueError, match="multiple of group_size"):
        quantized_nbytes((4, 100), 8, 64)


def test_streaming_reads_one_block_as_stored(tiny, converted):
    """The weight source of a converted file: one block, or everything but the blocks, quantised as the file
    holds it."""
    from ltx2.models.transformer.block import AVTransformerBlock

    path = converted["q8"] / "transformer.safetensors"
    full = load_transformer(path)
    blk = AVTransformerBlock(full.config.block)
    source = open_source(path, TRANSFORMER_KEYMAP)
    source.load_into(blk, "block 1", prefix="transformer_blocks.1.")
    a, b = dict(tree_flatten(blk.parameters())), dict(tree_flatten(full.transformer_blocks[1].parameters()))
    assert a.keys() == b.keys() and all(mx.array_equal(a[k], b[k]).item() for k in a)
    rest = load_converted(converted["float"] / "transformer.safetensors")  # any module of the right class
    rest.transformer_blocks = []
    source.load_into(rest, "resident part", exclude=("transformer_blocks.",))
    assert mx.array_equal(rest.patchify_proj.weight, full.patchify_proj.weight).item()


# ------------------------------------------------------------------------------------------ LoRA

def test_lora_fused_at_conversion_equals_lora_on_load(tiny, tmp_path):
    lora = (tiny["distilled_lora"], 0.6)
    convert_checkpoint(tiny["checkpoint"], tmp_path / "f32", loras=[lora], files=["transformer"], dtype="float32")
    path = tmp_path / "f32" / "transformer.safetensors"
    assert open_converted(path).parts["transformer"].loras[0]["strength"] == 0.6
    v, a = transformer_inputs(1)
    want = load_transformer(tiny["checkpoint"], loras=[lora])(v, a)
    for got in (load_transformer(path)(v, a),
                load_transformer(path, loras=[lora])(v, a)):  # recorded as fused: not fused twice
        for g, w in zip(got, want):
            assert mx.array_equal(g, w).item()


def test_lora_fused_on_load_into_converted_files(tiny, converted):
    lora = (tiny["distilled_lora"], 0.6)
    v, a = transformer_inputs(2)
    want = load_transformer(tiny["checkpoint"], loras=[lora])(v, a)
    got = load_transformer(converted["float"] / "transformer.safetensors", loras=[lora])(v, a)
    for g, w in zip(got, want):
        assert mx.array_equal(g, w).item()
    # into a q8 file: each adapted layer is dequantised, adapted and quantised again
    got = load_transformer(converted["q8"] / "transformer.safetensors", loras=[lora])(v, a)
    for g, w in zip(got, want):
        assert rel(g, w) < TRANSFORMER_Q8


def test_lora_for_another_model_is_an_error_naming_keys(tiny, tmp_path):
    bad = tmp_path / "bad.safetensors"
    save_file({"diffusion_model.nowhere.lora_A.weight": np.zeros((2, 4), np.float32),
               "diffusion_model.nowhere.lora_B.weight": np.zeros((4, 2), np.float32)}, str(bad))
    with pytest.raises(CheckpointError, match="nowhere"):
        convert_checkpoint(tiny["checkpoint"], tmp_path / "o", loras=[(bad, 1.0)], files=["transformer"])
    assert not (tmp_path / "o" / "transformer.safetensors").exists()


# ------------------------------------------------------------------------------------------ files, CLI

def test_writer_refuses_an_incomplete_file_and_leaves_nothing(tmp_path):
    lin = nn.Linear(64, 8)
    w = ConvertedWriter(tmp_path / "x.safetensors", config={}, dtype=mx.float32)
    w.add_part("upsampler", lin, {})
    w.put("upsampler", "weight", lin.weight)
    with pytest.raises(CheckpointError, match="never written.*bias"):
        w.close()
    with pytest.raises(ValueError, match="planned shape"):
        with ConvertedWriter(tmp_path / "y.safetensors", config={}) as w2:
            w2.add_part("upsampler", lin, {})
            w2.put("upsampler", "bias", mx.zeros((9,)))
    assert list(tmp_path.iterdir()) == []


def test_truncated_converted_file_is_named(converted, tmp_path):
    src = converted["q4"] / "transformer.safetensors"
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(src.read_bytes()[:-1000])
    with pytest.raises(CheckpointError, match="truncated"):
        load_transformer(cut)


def test_cli_convert_table_manifest_and_refusals(tiny, tmp_path):
    runner = CliRunner()
    out = tmp_path / "out"
    args = ["convert", "--checkpoint", str(tiny["checkpoint"]), "--out", str(out), "--parts", "transformer,audio",
            "--bits", "8", "--group-size", "32", "--lora", f"{tiny['distilled_lora']}:0.5"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "transformer.safetensors" in r.output and "audio.safetensors" in r.output and "8-bit" in r.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["bits"] == 8 and manifest["loras"][0]["strength"] == 0.5
    assert set(manifest["roles"]) == {"transformer", "audio_decoder", "vocoder"}
    assert manifest["files"]["transformer.safetensors"]["bytes"] < manifest["files"]["transformer.safetensors"][
        "source_bytes"]
    r = runner.invoke(app, args)  # out is not empty now
    assert r.exit_code == 2 and "--force" in r.output
    assert runner.invoke(app, args + ["--force"]).exit_code == 0
    for extra, msg in ((["--bits", "5"], "choose 8 or 4"), (["--parts", "transformer,vae"], "unknown"),
                       (["--parts", "upsampler"], "needs --upsampler")):
        r = runner.invoke(app, ["convert", "--checkpoint", str(tiny["checkpoint"]), "--out", str(tmp_path / "n"),
                                *extra])
        assert r.exit_code == 2 and msg in r.output, r.output
    with pytest.raises(ConvertError, match="--lora"):
        convert_checkpoint(tiny["checkpoint"], tmp_path / "m", loras=[(tiny["distilled_lora"], 1.0)], files=["audio"])


def test_converted_transformer_runs_through_the_denoise_stage(tiny, converted, tmp_path):
    """`ltx2 stage denoise --weights checkpoint=<converted transformer>` equals the official file's run."""
    env = dict(os.environ, LTX2_TINY_DIR=str(tiny["checkpoint"].parent))

    def stage(*args: str) -> None:
        r = subprocess.run([sys.executable, "-m", "ltx2.cli.main", "stage", *args], capture_output=True, text=True,
                           env=env, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr

    text = tmp_path / "text.zarr"
    stage("text-encode", "--out", str(text), "--set", "prompt=a cat")
    common = ["--in", str(text), "--set", "seed=3", "--set", "frames=9", "--set", "height=64", "--set", "width=64",
              "--set", "schedule={kind: ltx2, steps: 3}"]
    stage("denoise", *common, "--out", str(tmp_path / "a.zarr"), "--weights",
          f"checkpoint={converted['float'] / 'transformer.safetensors'}")
    stage("denoise", *common, "--out", str(tmp_path / "b.zarr"), "--weights", f"checkpoint={tiny['checkpoint']}")
    import zarr

    for name in ("video", "audio"):
        got, want = np.asarray(zarr.open(tmp_path / "a.zarr")[name]), np.asarray(zarr.open(tmp_path / "b.zarr")[name])
        np.testing.assert_array_equal(got, want)
