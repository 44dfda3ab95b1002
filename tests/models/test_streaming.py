"""Layer streaming and weight precisions: streamed == resident, through the real weight files.

The streamed transformer / Gemma read each block from the file right before it runs; the arithmetic
is the resident model's, so the outputs must be identical (compared exactly). The weight-byte
arithmetic the planner uses (models/weights/modes.py) must equal what the loaders actually hold.
"""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from ltx2.models.text import load_gemma
from ltx2.models.text.streaming import LayeredGemma, load_gemma_mode
from ltx2.models.tiny import ensure_tiny_model
from ltx2.models.transformer import ModalityInput, Perturbation, load_transformer
from ltx2.models.transformer.streaming import StreamedTransformer, TransformerWeights, load_transformer_mode
from ltx2.models.weights import CheckpointError
from ltx2.models.weights.modes import CANDIDATES, WeightsMode, WeightsModeError
from ltx2.stages.memory import gemma_held, transformer_held

FIXTURE = Path(__file__).parents[1] / "fixtures" / "seed0" / "transformer_ltx2.safetensors"  # float32 file


@pytest.fixture(scope="module")
def tiny() -> dict[str, Path]:
    return ensure_tiny_model()  # bf16 files, a LoRA, a Gemma folder


def _inputs(cfg, batch: int = 2) -> tuple[ModalityInput, ModalityInput]:
    rng = np.random.RandomState(3)

    def positions(axes: int, t: int) -> np.ndarray:
        p = np.zeros((batch, axes, t, 2), np.float32)
        p[:, :, :, 0] = rng.randint(0, 4, (1, axes, t))
        p[:, :, :, 1] = p[:, :, :, 0] + 1
        return p

    def m(t: int, c: int, axes: int) -> ModalityInput:
        return ModalityInput(latent=mx.array(rng.randn(batch, t, c).astype(np.float32)),
                             sigma=mx.array(rng.rand(batch).astype(np.float32)),
                             timesteps=mx.array(rng.rand(batch, t).astype(np.float32)), positions=positions(axes, t),
                             context=mx.array(rng.randn(batch, 5, cfg.caption_channels).astype(np.float32)))

    return m(12, cfg.in_channels, 3), m(7, cfg.audio_in_channels, 1)


def _max_diff(a, b) -> float:
    return max(float(mx.abs(x - y).max()) for x, y in zip(a, b))


PERTURB = [Perturbation.none(), Perturbation.stg([1])]  # an STG-perturbed batch row exercises per-block skips


@pytest.mark.parametrize("path_key", ["fixture", "tiny+lora"])
def test_streamed_transformer_equals_resident(tiny, path_key):
    path, loras = (FIXTURE, []) if path_key == "fixture" else (tiny["checkpoint"], [(tiny["distilled_lora"], 0.7)])
    official = load_transformer(path, loras=loras)  # the plain loader, all tensors at once
    v, a = _inputs(official.config)
    ref = official(v, a, PERTURB)
    resident = load_transformer_mode(path, WeightsMode(), loras)
    streamed = load_transformer_mode(path, WeightsMode(streaming=True), loras)
    assert isinstance(streamed, StreamedTransformer) and streamed.resident.transformer_blocks == []
    assert _max_diff(resident(v, a, PERTURB), ref) == 0.0
    assert _max_diff(streamed(v, a, PERTURB), ref) == 0.0
    # x0 (what the sampler calls) too, and every block is read again on each pass
    assert _max_diff(streamed.denoise(v, a, PERTURB), official.denoise(v, a, PERTURB)) == 0.0
    n = official.config.num_layers
    assert streamed.stats.passes == 2 and streamed.stats.blocks == 2 * n
    weights = streamed.weights
    assert streamed.stats.bytes_read == 2 * sum(weights.nbytes_stored(weights.block_keys[i]) for i in range(n))


@pytest.mark.parametrize("precision", ["bfloat16", "q8", "q4"])
def test_streamed_equals_resident_at_every_precision(tiny, precision):
    mode = WeightsMode(precision, group_size=32)  # 32: the tiny widths (32, 64) all split into groups
    loras = [(tiny["distilled_lora"], 0.5)]
    resident = load_transformer_mode(tiny["checkpoint"], mode, loras)
    streamed = load_transformer_mode(tiny["checkpoint"], WeightsMode(precision, True, 32), loras)
    v, a = _inputs(resident.config)
    assert _max_diff(streamed(v, a, PERTURB), resident(v, a, PERTURB)) == 0.0
    float_out = load_transformer(tiny["checkpoint"], loras=loras)(v, a, PERTURB)
    err = max(float(mx.linalg.norm(x - y) / mx.linalg.norm(y)) for x, y in zip(resident(v, a, PERTURB), float_out))
    assert 0 < err < {"bfloat16": 0.01, "q8": 0.02, "q4": 0.2}[precision]  # it IS another precision, and close
    quantized = [m for _, m in resident.transformer_blocks[0].named_modules() if isinstance(m, nn.QuantizedLinear)]
    assert bool(quantized) == (precision != "bfloat16")


def test_dequantizing_linear_equals_the_quantized_kernel():
    """On CPU quantised layers multiply through a float32 dequantised weight: the same numbers as MLX's kernel."""
    from ltx2.models.transformer.streaming import DequantizingLinear, prefer_float_matmul_on_cpu

    lin = nn.Linear(256, 96)
    x = mx.random.normal((3, 7, 256), key=mx.random.key(0))
    for bits in (8, 4):
        q = nn.QuantizedLinear.from_linear(lin, 64, bits)
        ref = q(x)
        prefer_float_matmul_on_cpu(q)
        assert isinstance(q, DequantizingLinear) and float(mx.abs(q(x) - ref).max()) <= 1e-5 * float(mx.abs(ref).max())


def test_bf16_storage_is_exact_for_a_bf16_file(tiny):
    """The official files are bf16: holding their matrices in bf16 changes no output (compute stays float32)."""
    f32 = load_transformer_mode(tiny["checkpoint"], WeightsMode())
    bf16 = load_transformer_mode(tiny["checkpoint"], WeightsMode("bfloat16"))
    v, a = _inputs(f32.config)
    assert _max_diff(bf16(v, a, PERTURB), f32(v, a, PERTURB)) == 0.0
    dtypes = {k: p.dtype for k, p in tree_flatten(bf16.parameters())}
    assert dtypes["transformer_blocks.0.ff.proj_in.weight"] == mx.bfloat16
    assert dtypes["transformer_blocks.0.ff.proj_in.bias"] == mx.float32  # only block matrices
    assert dtypes["adaln_single.linear.weight"] == mx.float32  # outside the blocks: float32


@pytest.mark.parametrize("mode", [m for m in CANDIDATES if not m.streaming] + [WeightsMode("q4", group_size=32)])
def test_planned_bytes_equal_what_the_loaders_hold(tiny, mode):
    model = load_transformer_mode(tiny["checkpoint"], mode)
    held = transformer_held(tiny["checkpoint"], mode)
    assert held.total(False) == sum(p.nbytes for _, p in tree_flatten(model.parameters()))
    assert held.resident == sum(p.nbytes for k, p in tree_flatten(model.parameters())
                                if not k.startswith("transformer_blocks."))
    gemma = load_gemma_mode(tiny["gemma"], mode)
    gheld = gemma_held(tiny["gemma"], mode)
    assert gheld.blocks == tuple(sum(p.nbytes for _, p in tree_flatten(layer.parameters())) for layer in gemma.layers)
    assert gheld.resident == sum(p.nbytes for _, p in tree_flatten(gemma.encoder.parameters()))


def test_streamed_gemma_equals_gemma_encoder(tiny):
    official = load_gemma(tiny["gemma"])
    rng = np.random.RandomState(5)
    ids = mx.array(rng.randint(0, official.config.vocab_size, (2, 20)))
    mask = mx.array(np.concatenate([np.zeros((2, 6), np.int32), np.ones((2, 14), np.int32)], 1))  # left padding
    ref = official(ids, mask)
    for mode in (WeightsMode(), WeightsMode(streaming=True), WeightsMode("bfloat16", True)):
        g = load_gemma_mode(tiny["gemma"], mode)
        assert isinstance(g, LayeredGemma) and "embed_tokens" not in g.encoder.model  # rows read from the file
        out = g(ids, mask)
        assert len(out) == len(ref) and _max_diff(out, ref) == 0.0, mode
    assert g.stats.passes == 1 and g.stats.blocks == official.config.num_hidden_layers
    q = load_gemma_mode(tiny["gemma"], WeightsMode("q8", group_size=32))
    qs = load_gemma_mode(tiny["gemma"], WeightsMode("q8", True, 32))
    assert _max_diff(qs(ids, mask), q(ids, mask)) == 0.0


def test_converted_files_stream_too(tiny, tmp_path):
    """Files written by `ltx2 convert` (here 4-bit) stream block by block, equal to their resident load."""
    from ltx2.models.weights.conversion import convert_checkpoint

    convert_checkpoint(tiny["checkpoint"], tmp_path / "c", gemma=tiny["gemma"], bits=4, group_size=32,
                       files=["transformer", "text"])
    tf, text = tmp_path / "c" / "transformer.safetensors", tmp_path / "c" / "text.safetensors"
    lora = [(tiny["distilled_lora"], 0.7)]
    ref = load_transformer(tf, loras=lora)
    v, a = _inputs(ref.config)
    for streaming in (False, True):
        m = load_transformer_mode(tf, WeightsMode("q4", streaming, 32), lora)
        assert _max_diff(m(v, a, PERTURB), ref(v, a, PERTURB)) == 0.0
    assert transformer_held(tf, WeightsMode("q4", False, 32)).total(False) == sum(
        p.nbytes for _, p in tree_flatten(ref.parameters()))
    ids = mx.array(np.arange(12).reshape(2, 6))
    g_ref = load_gemma(text)(ids)
    assert _max_diff(load_gemma_mode(text, WeightsMode("q4", True, 32))(ids), g_ref) == 0.0
    with pytest.raises(CheckpointError, match="quantised to 4 bits.*asks for q8"):
        TransformerWeights(tf, WeightsMode("q8", False, 32))


def test_lora_matching_nothing_is_refused_before_any_block_is_read(tiny, tmp_path):
    from ltx2.models.tiny.weights import write_safetensors

    bad = tmp_path / "bad_lora.safetensors"
    write_safetensors(bad, {"diffusion_model.transformer_blocks.7.attn1.to_q.lora_A.weight": np.zeros((2, 64), np.float32),
                            "diffusion_model.transformer_blocks.7.attn1.to_q.lora_B.weight": np.zeros((64, 2), np.float32)},
                      {})
    with pytest.raises(CheckpointError, match="match no weight.*transformer_blocks.7"):
        TransformerWeights(tiny["checkpoint"], WeightsMode(streaming=True), [(bad, 1.0)])


def test_weights_mode_parameter_is_validated():
    assert WeightsMode.from_params(None) == WeightsMode()
    assert WeightsMode.from_params({"precision": "q4", "streaming": True}).params() == {
        "precision": "q4", "streaming": True, "group_size": 64}
    assert WeightsMode.from_params({"precision": "bfloat16"}).params() == {"precision": "bfloat16", "streaming": False}
    with pytest.raises(WeightsModeError, match="precision='q3'"):
        WeightsMode.from_params({"precision": "q3"})
    with pytest.raises(WeightsModeError, match="unknown field"):
        WeightsMode.from_params({"precision": "q4", "bits": 4})
    with pytest.raises(WeightsModeError, match="group_size=48"):
        WeightsMode("q4", group_size=48)


def test_prefetcher_reads_exactly_the_ranges_asked_for(tmp_path):
    from ltx2.models.weights.prefetch import Prefetcher

    f = tmp_path / "blob"
    f.write_bytes(bytes(range(256)) * 100)  # 25600 bytes
    p = Prefetcher(chunk_bytes=1000)  # ranges longer than the buffer are read in pieces
    p.ahead([(f, 10, 3010), (f, 5000, 5001), (f, 7, 7)])
    p.ahead([(f, 25000, 30000)])  # runs past the end: reads what is there, no error
    p.wait()
    assert p.bytes_read == 3000 + 1 + 600
    p.close()


def test_streaming_prefetches_the_next_block_of_each_network(tiny, monkeypatch):
    """While block i computes, block i+1's bytes (block 0 after the last) are read ahead: one pass reads
    every block's bytes once more in the background, with outputs unchanged; LTX2_PREFETCH=0 turns it off."""
    streamed = load_transformer_mode(tiny["checkpoint"], WeightsMode(streaming=True))
    v, a = _inputs(streamed.config)
    out = streamed(v, a, PERTURB)
    streamed.prefetch.wait()
    w = streamed.weights
    assert streamed.prefetch.bytes_read == sum(w.nbytes_stored(w.block_keys[i]) for i in w.block_keys)
    monkeypatch.setenv("LTX2_PREFETCH", "0")
    plain = load_transformer_mode(tiny["checkpoint"], WeightsMode(streaming=True))
    assert plain.prefetch is None
    assert _max_diff(plain(v, a, PERTURB), out) == 0.0
    monkeypatch.delenv("LTX2_PREFETCH")
    gemma = load_gemma_mode(tiny["gemma"], WeightsMode(streaming=True))
    gemma(mx.array([[2, 5, 7, 9]]))
    gemma.prefetch.wait()
    gw = gemma.weights
    assert gemma.prefetch.bytes_read == sum(gw.nbytes_stored(gw.layer_keys[i]) for i in gw.layer_keys)
