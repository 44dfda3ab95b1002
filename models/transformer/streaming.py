"""The transformer built block by block: resident at a chosen precision, or streamed from the weight file.

``TransformerWeights`` reads the transformer's tensors from the checkpoint one block at a time (only
that block's keys, through ``models.weights.load_tensors``: bf16 / fp8 decoding as for any load),
fuses the LoRAs into them, maps their names with the loader's ``sanitize`` and holds them as the
``WeightsMode`` says (float32, bf16 matrices, or q8/q4 affine-quantised from float32; see
``models/weights/modes.py``). Building a resident model this way never holds more than the finished
model plus one block in float32, whatever the precision.

``StreamedTransformer`` keeps only the weights outside the blocks resident. On every forward pass it
reads block i, runs it, evaluates the two token streams and drops the block before reading block
i + 1, so the peak holds one block. The arithmetic is the resident model's, block for block: the
outputs are identical (tests/test_streaming.py). It stands in for ``LTX2Transformer`` wherever the
sampler uses one (``positional_tables``, ``__call__``, ``denoise``, ``set_query_chunk``, ``config``).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn

from ..weights import CheckpointError, load_strict, load_tensors, read_header
from ..weights.lora import fuse_lora, lora_targets
from ..weights.modes import RESIDENT_FLOAT32, WeightsMode, held_dtype
from ..weights.prefetch import Prefetcher, prefetch_enabled
from .attention import DEFAULT_QUERY_CHUNK
from .block import AVTransformerBlock
from .config import TransformerConfig
from .loader import FOREIGN_PREFIXES, PREFIX, sanitize, transformer_keys
from .model import LTX2Transformer, ModalityInput, PositionalTables, to_x0
from .perturbations import PerturbationArg

BLOCKS = "transformer_blocks."
_BLOCK_KEY = re.compile(r"^transformer_blocks\.(\d+)\.")
_FOREIGN = tuple(p[len(PREFIX):] for p in FOREIGN_PREFIXES)


def to_float32(weights: dict[str, mx.array]) -> dict[str, mx.array]:
    """Cast the float tensors to float32 in place, evaluating one at a time: a lazy cast of every tensor
    would keep all the stored (bf16) copies alive until the end, half as much again as the block."""
    for k, v in weights.items():
        if mx.issubdtype(v.dtype, mx.floating) and v.dtype != mx.float32:
            weights[k] = v.astype(mx.float32)
            mx.eval(weights[k])
    return weights


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
            mx.eval(out[k])  # one conversion at a time (see to_float32)
    return out


def hold_module(module: nn.Module, mode: WeightsMode, in_block: bool) -> nn.Module:
    """``hold`` applied to a loaded module's parameters (a quantised layer's scales / biases stay float32)."""
    from mlx.utils import tree_flatten, tree_unflatten

    module.update(tree_unflatten(list(hold(dict(tree_flatten(module.parameters())), mode, in_block).items())))
    return module


def converted_mode_check(path: Path, bits: int | None, group_size: int | None, mode: WeightsMode) -> None:
    """A quantised converted file can only be used at its own precision (it holds no float weights)."""
    if bits is None:
        return
    if mode.bits != bits or mode.group_size != group_size:
        raise CheckpointError(f"{path}: this converted file is quantised to {bits} bits (group size {group_size}); "
                              f"weights_mode asks for {mode.label}. Use precision q{bits} with group_size "
                              f"{group_size}, or point the job at the official (or a float converted) file")


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
        y = x @ w.T
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


def finish_block(module: nn.Module, mode: WeightsMode) -> nn.Module:
    """A freshly loaded block under ``mode``: quantised (unless its file already was), on the CPU matmul
    path, evaluated so its memory is real when this returns."""
    if any(isinstance(m, nn.QuantizedLinear) for m in module.modules()):
        prefer_float_matmul_on_cpu(module)
    else:
        quantize_block(module, mode)  # (sets the CPU matmul path itself)
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
    """The transformer's tensors in a weight file, readable block by block under a ``WeightsMode``."""

    def __init__(self, path: str | Path, mode: WeightsMode = RESIDENT_FLOAT32,
                 loras: list[tuple[str | Path, float]] | tuple = ()):
        from ..weights.converted import is_converted, open_converted

        self.path = Path(path)
        self.header = read_header(self.path)
        self.mode = mode
        # a file written by `ltx2 convert`: module names (already sanitized), possibly quantised blocks
        self.converted = open_converted(self.path) if is_converted(self.path) else None
        if self.converted is not None:
            info = self.converted.part("transformer")
            converted_mode_check(self.path, info.bits, info.group_size, mode)
            self.config = TransformerConfig.from_config(info.config)
            keys = self.converted.keys("transformer")
        else:
            self.config = TransformerConfig.from_config(self.header.config())
            keys = transformer_keys(self.header)
        if not keys:
            raise CheckpointError(f"{self.path}: no tensors under {PREFIX!r}; is this an LTX-2 checkpoint?")
        self.block_keys: dict[int, list[str]] = {}
        self.other_keys: list[str] = []
        for k in keys:
            m = _BLOCK_KEY.match(k[len(PREFIX):])
            if m:
                self.block_keys.setdefault(int(m.group(1)), []).append(k)
            else:
                self.other_keys.append(k)
        n = self.config.num_layers
        if sorted(self.block_keys) != list(range(n)):
            raise CheckpointError(f"{self.path}: the config says num_layers={n} but the file holds transformer "
                                  f"blocks {sorted(self.block_keys)[:8]}{' ...' if len(self.block_keys) > 8 else ''}")
        self.loras = [(Path(p), float(s)) for p, s in loras]
        self._check_loras()

    def _check_loras(self) -> None:
        """Every LoRA pair must adapt a weight of this transformer (checked once, for all blocks)."""
        have = {k[len(PREFIX):] for k in self.block_keys_all()}
        if self.converted is not None:  # module names: compare the LoRA targets in module naming
            from ..weights.converted import _already_fused

            info = self.converted.part("transformer")
            self.loras = [(p, s) for p, s in self.loras if not _already_fused(info, p, s)]  # fused at conversion
        for path, _ in self.loras:
            targets = lora_targets(read_header(path).tensors)
            if not targets:
                raise CheckpointError(f"{path}: no '*.lora_A.weight' / '*.lora_B.weight' pairs: not a LoRA file")
            targets = {t: ab for t, ab in targets.items() if not t.startswith(_FOREIGN)}
            if self.converted is not None:
                names = {t: next(iter(sanitize({t: None}))) for t in targets}
                unmatched = sorted(ab[0] for t, ab in targets.items() if names[t] not in have)
                outside = sorted(ab[0] for t, ab in targets.items() if not names[t].startswith(BLOCKS))
                if outside and not unmatched:
                    raise CheckpointError(f"{path}: LoRA pairs outside the transformer blocks (e.g. {outside[0]}) "
                                          "cannot be fused into a converted file on load; convert with --lora")
            else:
                unmatched = sorted(ab[0] for t, ab in targets.items() if t not in have)
            if unmatched:
                raise CheckpointError(
                    f"{path}: {len(unmatched)} LoRA tensor pair(s) match no weight of the model, e.g. "
                    + ", ".join(unmatched[:5]) + " (is this LoRA made for this checkpoint?)")

    def block_keys_all(self) -> list[str]:
        return self.other_keys + [k for i in sorted(self.block_keys) for k in self.block_keys[i]]

    def _read(self, keys: list[str], ignore: tuple[str, ...]) -> dict[str, mx.array]:
        """``keys`` read, LoRA-fused (pairs for ``ignore`` prefixes are other reads' business), sanitized."""
        floating = all(self.header.tensors[k].dtype in ("BF16", "F16", "F32") for k in keys)
        keep_stored = self.mode.precision == "bfloat16" and not self.loras and floating
        raw = load_tensors(self.header, keys, None)
        w = {k[len(PREFIX):]: v for k, v in raw.items()}
        if not keep_stored:
            to_float32(w)
        for path, strength in self.loras:
            w = fuse_lora(w, path, strength, ignore_prefixes=_FOREIGN + ignore)
        return sanitize(w)

    def nbytes_stored(self, keys: list[str]) -> int:
        return sum(self.header.tensors[k].nbytes for k in keys)

    def block_ranges(self, i: int) -> list:
        """(file, begin, end) of block ``i``'s tensors, for the prefetcher."""
        from ..weights.prefetch import tensor_ranges

        return tensor_ranges(self.path, self.header, self.block_keys[i])

    def resident_part(self) -> LTX2Transformer:
        """The model without its blocks (patchify, caption projections, AdaLN, output), loaded, float32."""
        model = LTX2Transformer(self.config)
        model.transformer_blocks = []  # their (never evaluated) random init is dropped here
        if self.converted is not None:
            from ..weights.converted import load_converted_submodule

            load_converted_submodule(self.converted, "transformer", "", model, dtype=mx.float32, exclude=(BLOCKS,))
        else:
            load_strict(model, hold(self._read(self.other_keys, (BLOCKS,)), self.mode, in_block=False), "transformer")
        mx.eval(model.parameters())
        return model

    def new_block(self) -> AVTransformerBlock:
        c = self.config
        return AVTransformerBlock(c.inner_dim, c.num_attention_heads, c.attention_head_dim, c.audio_inner_dim,
                                  c.audio_num_attention_heads, c.audio_attention_head_dim, c.norm_eps)

    def block(self, i: int) -> AVTransformerBlock:
        """Block ``i`` loaded and held under the mode (evaluated: its memory is real when this returns)."""
        prefix = f"{BLOCKS}{i}."
        blk = self.new_block()
        if self.converted is not None:
            from ..weights.converted import fuse_lora_into_transformer, load_converted_submodule

            load_converted_submodule(self.converted, "transformer", prefix, blk, dtype=mx.float32)
            for path, strength in self.loras:  # a quantised layer is dequantised, adapted, quantised again
                fuse_lora_into_transformer(blk, path, strength, prefix=prefix)
            hold_module(blk, self.mode, in_block=True)
        else:
            others = tuple(f"{BLOCKS}{j}." for j in range(self.config.num_layers) if j != i) + tuple(
                sorted({k[len(PREFIX):] for k in self.other_keys}))
            w = self._read(self.block_keys[i], others)
            load_strict(blk, hold({k[len(prefix):]: v for k, v in w.items()}, self.mode, in_block=True),
                        f"transformer block {i}")
        return finish_block(blk, self.mode)


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
            vs, as_ = blk(vs, as_, LTX2Transformer.block_skips(perturbations, b, i))
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
                          loras: list[tuple[str | Path, float]] | tuple = ()) -> LTX2Transformer | StreamedTransformer:
    """The transformer as ``mode`` says: resident (an ``LTX2Transformer``) or streamed."""
    weights = TransformerWeights(path, mode, loras)
    return StreamedTransformer(weights) if mode.streaming else load_resident(weights)
