"""The transformer built block by block: resident at a chosen precision, or streamed from the weight file.

``TransformerWeights`` reads the transformer's tensors from its weight source one block at a time (only
that block's tensors: fp8 decoding, LoRA fusion and the key map applied by the source, the same for
the official file and a converted one) and holds them as the ``WeightsMode`` says (float32, bf16
matrices, or q8/q4 affine-quantised from float32; see ``models/weights/modes.py``). Building a
resident model this way never holds more than the finished model plus one block in float32, whatever
the precision.

``StreamedTransformer`` keeps only the weights outside the blocks resident. On every forward pass it
reads block i, runs it, evaluates the two token streams and drops the block before reading block
i + 1, so the peak holds one block. The arithmetic is the resident model's, block for block: the
outputs are identical (tests/test_streaming.py). It stands in for ``LTX2Transformer`` wherever the
sampler uses one (``positional_tables``, ``__call__``, ``denoise``, ``set_query_chunk``, ``config``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn

from ..precision import cast_floating
from ..weights import CheckpointError
from ..weights.modes import RESIDENT_FLOAT32, WeightsMode, held_dtype
from ..weights.prefetch import Prefetcher, Range, prefetch_enabled
from ..weights.source import WeightSource, open_source
from .attention import DEFAULT_QUERY_CHUNK
from .block import AVTransformerBlock
from .config import TransformerConfig
from .loader import TRANSFORMER_KEYMAP
from .model import LTX2Transformer, ModalityInput, PositionalTables, to_x0
from .perturbations import PerturbationArg

BLOCKS = "transformer_blocks."


def hold(weights: dict[str, mx.array], mode: WeightsMode, in_block: bool) -> dict[str, mx.array]:
    """Cast each float tensor to the dtype ``mode`` holds it in before quantisation (those to be quantised
    stay float32); packed (already quantised) tensors are left as they are."""
    out = {}
    for k, v in weights.items():
        if not mx.issubdtype(v.dtype, mx.floating):
            out[k] = v
            continue
        kind = held_dtype(k, tuple(v.shape), mode, in_block)
        out[k] = v.astype(mx.bfloat16 if kind == "bfloat16" else mx.float32)
        if out[k].dtype != v.dtype:
            mx.eval(out[k])  # one conversion at a time (see source.cast_each)
    return out


def converted_mode_check(path: Path, bits: int | None, group_size: int | None, mode: WeightsMode) -> None:
    """A quantised converted file can only be used at its own precision (it holds no float weights)."""
    if bits is None:
        return
    if mode.bits != bits or mode.group_size != group_size:
        raise CheckpointError(f"{path}: this converted file is quantised to {bits} bits (group size {group_size}); "
                              f"weights_mode asks for {mode.label}. Use precision q{bits} with group_size "
                              f"{group_size}, or point the job at the official (or a float converted) file")


def read_held(source: WeightSource, names: list[str], mode: WeightsMode, strip: str,
              in_block: bool) -> dict[str, mx.array]:
    """``names`` read block-wise (cast one tensor at a time), ``strip`` removed, held as ``mode`` says. Read as
    stored when the mode keeps bf16 matrices of a float file and nothing is fused into them (no float32 copy)."""
    keep_stored = mode.precision == "bfloat16" and not source.loras and source.all_float(names)
    w = source.read(names, None if keep_stored else mx.float32, stepwise=True)
    return hold({k[len(strip):]: v for k, v in w.items()}, mode, in_block)


class DequantizingLinear(nn.QuantizedLinear):
    """A QuantizedLinear that, for its matmul, dequantises its weight to float32 and multiplies in float32.

    Used on CPU only: MLX's CPU quantised matmul is a plain loop, ~30x slower than the BLAS float32
    matmul at the transformer's widths (benchmarks/transformer_memory.py), while the weights stay
    quantised in memory and only one layer at a time exists in float32. With float32 scales and
    biases (how this project quantises) the numbers are the same as the quantised kernel's. On Metal
    the fused quantised matmul is fast and is used as is."""

    def __call__(self, x: mx.array) -> mx.array:
        w = mx.dequantize(self.weight, self.scales, self.biases, group_size=self.group_size, bits=self.bits,
                          mode=getattr(self, "mode", "affine"))
        y = x @ w.astype(x.dtype).T  # at the input's width: the compute's (models/precision.py)
        return y + self.bias if "bias" in self else y


def prefer_float_matmul_on_cpu(module: nn.Module) -> nn.Module:
    """On CPU, let every QuantizedLinear of ``module`` compute through a float32 dequantised weight."""
    if mx.default_device() == mx.cpu:
        for _, m in module.named_modules():
            if type(m) is nn.QuantizedLinear:
                m.__class__ = DequantizingLinear
    return module


def quantize_block(module: nn.Module, mode: WeightsMode) -> nn.Module:
    """Affine-quantise the Linear layers of a block whose inputs split into groups (modes.quantizable)."""
    if mode.quantized:
        gs = mode.group_size
        nn.quantize(module, group_size=gs, bits=mode.bits,
                    class_predicate=lambda _p, m: isinstance(m, nn.Linear) and m.weight.shape[1] % gs == 0)
    return prefer_float_matmul_on_cpu(module)


def finish_block(module: nn.Module, mode: WeightsMode, dtype: mx.Dtype = mx.float32) -> nn.Module:
    """A freshly loaded block under ``mode``: quantised (unless its file already was), on the CPU matmul
    path, its float weights (a quantised layer's scales and biases too) in the compute ``dtype`` where that is
    narrower than float32 (models/precision.py), evaluated so its memory is real when this returns."""
    if any(isinstance(m, nn.QuantizedLinear) for m in module.modules()):
        prefer_float_matmul_on_cpu(module)
    else:
        quantize_block(module, mode)  # (sets the CPU matmul path itself)
    if dtype != mx.float32:
        cast_floating(module, dtype)
    mx.eval(module.parameters())
    return module


@dataclass
class StreamStats:
    """Time and bytes spent bringing blocks in (reading, LoRA fusion, casting, quantising)."""

    passes: int = 0
    blocks: int = 0
    load_s: float = 0.0
    bytes_read: int = 0
    per_pass_s: list[float] = field(default_factory=list)


class TransformerWeights:
    """The transformer's tensors in a weight source, readable block by block under a ``WeightsMode``."""

    def __init__(self, path: str | Path | WeightSource, mode: WeightsMode = RESIDENT_FLOAT32,
                 loras: list[tuple[str | Path, float]] | tuple = (), dtype: mx.Dtype = mx.float32):
        # every LoRA pair is checked against the transformer here, before any block is read
        self.source = open_source(path, TRANSFORMER_KEYMAP, loras)
        self.path = self.source.path
        self.mode = mode
        self.dtype = dtype  # the compute dtype (models/precision.py): float weights end up in it
        q = self.source.quantization()
        if q is not None:
            converted_mode_check(self.path, *q, mode)
        self.config = TransformerConfig.from_config(self.source.config())
        self.source.require_tensors()
        self.block_keys, self.other_keys = self.source.blocks(BLOCKS)
        n = self.config.num_layers
        if sorted(self.block_keys) != list(range(n)):
            raise CheckpointError(f"{self.path}: the config says num_layers={n} but the file holds transformer "
                                  f"blocks {sorted(self.block_keys)[:8]}{' ...' if len(self.block_keys) > 8 else ''}")
        self.loras = self.source.loras  # those still to fuse (not already fused at conversion)

    def nbytes_stored(self, names: list[str]) -> int:
        return self.source.stored_nbytes(names)

    def block_ranges(self, i: int) -> list[Range]:
        """(file, begin, end) of block ``i``'s tensors, for the prefetcher."""
        return self.source.ranges(self.block_keys[i])

    def resident_part(self) -> LTX2Transformer:
        """The model without its blocks (patchify, caption projections, AdaLN, output), loaded, float32 (or the
        compute dtype when it is narrower)."""
        model = LTX2Transformer(self.config)
        model.transformer_blocks = []  # their (never evaluated) random init is dropped here
        self.source.load_into(model, "transformer",
                              weights=read_held(self.source, self.other_keys, self.mode, "", in_block=False))
        if self.dtype != mx.float32:
            cast_floating(model, self.dtype)
        mx.eval(model.parameters())
        return model

    def new_block(self) -> AVTransformerBlock:
        return AVTransformerBlock(self.config.block)

    def block(self, i: int) -> AVTransformerBlock:
        """Block ``i`` loaded and held under the mode (evaluated: its memory is real when this returns)."""
        prefix = f"{BLOCKS}{i}."
        blk = self.new_block()
        self.source.load_into(blk, f"transformer block {i}",
                              weights=read_held(self.source, self.block_keys[i], self.mode, prefix, in_block=True))
        return finish_block(blk, self.mode, self.dtype)


def load_resident(weights: TransformerWeights) -> LTX2Transformer:
    """Every block resident under the mode; built one block at a time."""
    model = weights.resident_part()
    model.transformer_blocks = [weights.block(i) for i in range(weights.config.num_layers)]
    return model


class StreamedTransformer:
    """``LTX2Transformer``'s interface with one block resident at a time, read from the file per pass."""

    def __init__(self, weights: TransformerWeights):
        self.weights = weights
        self.config = weights.config
        self.resident = weights.resident_part()
        self.query_chunk: int | None = DEFAULT_QUERY_CHUNK
        self.stats = StreamStats()
        self.prefetch = Prefetcher() if prefetch_enabled() else None

    def set_query_chunk(self, n: int | None) -> None:
        self.query_chunk = n

    def positional_tables(self, video_positions, audio_positions) -> PositionalTables:
        return self.resident.positional_tables(video_positions, audio_positions)

    def _block(self, i: int) -> AVTransformerBlock:
        t0 = time.perf_counter()
        blk = self.weights.block(i)
        if self.query_chunk != DEFAULT_QUERY_CHUNK:
            for a in (blk.attn1, blk.attn2, blk.audio_attn1, blk.audio_attn2, blk.audio_to_video_attn,
                      blk.video_to_audio_attn):
                a.query_chunk = self.query_chunk
        self.stats.load_s += time.perf_counter() - t0
        self.stats.blocks += 1
        self.stats.bytes_read += self.weights.nbytes_stored(self.weights.block_keys[i])
        if self.prefetch is not None:  # the next block's bytes (block 0 for the next pass) come in meanwhile
            self.prefetch.ahead(self.weights.block_ranges((i + 1) % self.config.num_layers))
        return blk

    def __call__(self, video: ModalityInput, audio: ModalityInput, perturbations: PerturbationArg = None,
                 tables: PositionalTables | None = None) -> tuple[mx.array, mx.array]:
        t_load = self.stats.load_s
        vs, as_ = self.resident.prepare(video, audio, tables)
        b = vs.x.shape[0]
        for i in range(self.config.num_layers):
            blk = self._block(i)
            vs, as_ = blk(vs, as_, LTX2Transformer.block_skips(perturbations, b, i, vs.x.dtype))
            # evaluate before the next block comes in, so this block's weights can go
            mx.eval(vs.x, as_.x)
            del blk
        self.stats.passes += 1
        self.stats.per_pass_s.append(self.stats.load_s - t_load)
        return self.resident.finish(vs, as_)

    def denoise(self, video: ModalityInput, audio: ModalityInput, perturbations: PerturbationArg = None,
                tables: PositionalTables | None = None) -> tuple[mx.array, mx.array]:
        v_vel, a_vel = self(video, audio, perturbations, tables)
        return to_x0(video, v_vel), to_x0(audio, a_vel)


def load_transformer_mode(path: str | Path, mode: WeightsMode = RESIDENT_FLOAT32,
                          loras: list[tuple[str | Path, float]] | tuple = (),
                          dtype: mx.Dtype = mx.float32) -> LTX2Transformer | StreamedTransformer:
    """The transformer as ``mode`` says: resident (an ``LTX2Transformer``) or streamed, computing in ``dtype``
    (models/precision.py: its float weights held in it when narrower than float32)."""
    weights = TransformerWeights(path, mode, loras, dtype)
    return StreamedTransformer(weights) if mode.streaming else load_resident(weights)
