"""How a large network's weights are held while a stage runs: precision and streaming.

A :class:`WeightsMode` is part of a stage's parameters (and so of its cache key), because every
precision but float32 changes the outputs:

``float32``
    every tensor in float32. Exact; the largest.
``bfloat16``
    the Linear matrices INSIDE the repeated blocks (transformer blocks, Gemma layers) stored in
    bfloat16; norms, biases, AdaLN tables and everything outside the blocks stay float32. With float32
    compute (the stage's ``compute``, models/precision.py) a bf16 matrix is upcast when its matmul runs
    (MLX promotes bf16 x f32 to f32), so only one matrix at a time exists in float32 besides the stored
    copy. (Outside the blocks some layers cast their input to their weight's dtype, e.g. the timestep
    embedder, so they stay float32; they are ~2% of the transformer.)
    The official checkpoints ARE bf16 (fp8 ones decode to bf16 values), so for them this is
    bit-identical to float32 at half the memory; only LoRA-fused matrices are rounded once to bf16.
    A half ``compute`` holds every float tensor at its width whatever the mode (``held_nbytes``).
``q8`` / ``q4``
    the Linear matrices INSIDE the repeated blocks (transformer blocks, Gemma layers) in MLX's affine
    quantisation (``bits`` per weight, a scale and a bias per ``group_size`` inputs), quantised from
    float32 so scales and biases are float32: MLX's CPU quantised matmul is then exact against the
    dequantised matrix (with bf16 scales it accumulates in bf16, 0.3% off). Everything else is held
    as in ``bfloat16`` (outside the blocks: AdaLN, projections, norms are small and sensitive).

``streaming``
    only the weights outside the blocks stay resident; each block's weights are read from the weight
    file right before the block runs and dropped after it, on every forward pass. Peak memory holds
    one block instead of all of them; each pass pays a read of every block (see the benchmarks).

This module holds the rules and the header-only byte arithmetic; the loaders in
``models/transformer/streaming.py`` and ``models/text/streaming.py`` apply the same rules.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from ltx2.spec.errors import BadInputError

from .quantize import quantized_nbytes  # the one byte count of a quantised matrix (float32 scales)

PRECISIONS = ("float32", "bfloat16", "q8", "q4")
BITS = {"q8": 8, "q4": 4}
GROUP_SIZES = (32, 64, 128)  # what mx.quantize accepts
DEFAULT_GROUP_SIZE = 64
F32, BF16 = 4, 2


class WeightsModeError(BadInputError):
    """A weights_mode parameter that names no supported precision / streaming choice."""


@dataclass(frozen=True)
class WeightsMode:
    precision: str = "float32"
    streaming: bool = False
    group_size: int = DEFAULT_GROUP_SIZE

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise WeightsModeError(f"weights_mode.precision={self.precision!r}: use one of {', '.join(PRECISIONS)}")
        if not isinstance(self.streaming, bool):
            raise WeightsModeError(f"weights_mode.streaming={self.streaming!r}: use true or false")
        if self.group_size not in GROUP_SIZES:
            raise WeightsModeError(f"weights_mode.group_size={self.group_size!r}: use one of {GROUP_SIZES}")

    @property
    def bits(self) -> int | None:
        return BITS.get(self.precision)

    @property
    def quantized(self) -> bool:
        return self.precision in BITS

    def params(self) -> dict[str, Any]:
        """The canonical parameter form (group_size only where it matters, so it never changes a key in vain)."""
        out: dict[str, Any] = {"precision": self.precision, "streaming": self.streaming}
        if self.quantized:
            out["group_size"] = self.group_size
        return out

    @classmethod
    def from_params(cls, value: Any) -> "WeightsMode":
        """From a stage's ``weights_mode`` parameter (None: float32, resident)."""
        if value is None:
            return cls()
        if isinstance(value, WeightsMode):
            return value
        if not isinstance(value, dict):
            raise WeightsModeError(f"weights_mode={value!r}: give a mapping like "
                                   "{precision: q4, streaming: false, group_size: 64}")
        unknown = sorted(set(value) - {"precision", "streaming", "group_size"})
        if unknown:
            raise WeightsModeError(f"weights_mode: unknown field(s) {unknown}; allowed: precision, streaming, "
                                   "group_size")
        return cls(str(value.get("precision", "float32")), value.get("streaming", False),
                   value.get("group_size", DEFAULT_GROUP_SIZE))

    @property
    def label(self) -> str:
        return f"{self.precision}{' g' + str(self.group_size) if self.quantized else ''}" \
               f"{', streamed' if self.streaming else ''}"


RESIDENT_FLOAT32 = WeightsMode()

# The planner's order of preference. Resident before streamed: streaming re-reads every block from
# disk on every pass (tens of GB per step at full size), which costs far more time than the small
# accuracy loss of quantising. Among resident modes the most exact first (float32, then bf16, which
# is exact for the bf16 official files, then q8, then q4). Among streamed modes the same order: with
# a bf16 file a streamed bf16 block is the smallest read (a quantised one is read in float and
# quantised per pass, which only costs time); q8/q4 streaming pays off only when the file itself is
# already quantised. For a file whose block matrices are stored in bf16 (the official ones) the planner
# drops the float32 modes: they hold the same values at twice the memory (orchestrator/planner.py).
CANDIDATES: tuple[WeightsMode, ...] = tuple(
    [WeightsMode(p) for p in PRECISIONS] + [WeightsMode(p, streaming=True) for p in PRECISIONS])


# ------------------------------------------------------------------------------------------- bytes
def quantizable(key: str, shape: tuple[int, ...], group_size: int) -> bool:
    """A Linear matrix that affine quantisation can take: 2-D ``*.weight`` whose inputs split into groups."""
    return key.endswith(".weight") and len(shape) == 2 and shape[1] % group_size == 0 and shape[1] >= group_size


def is_matrix(key: str, shape: tuple[int, ...]) -> bool:
    """A Linear matrix (inside a block, held in bf16 by every mode but float32)."""
    return key.endswith(".weight") and len(shape) == 2


def held_dtype(key: str, shape: tuple[int, ...], mode: WeightsMode, in_block: bool) -> str:
    """"float32", "bfloat16" or "quantized": how one tensor is held under ``mode``."""
    if mode.precision == "float32" or not in_block:
        return "float32"
    if mode.quantized and quantizable(key, shape, mode.group_size):
        return "quantized"
    return "bfloat16" if is_matrix(key, shape) else "float32"


def held_nbytes(key: str, shape: tuple[int, ...], mode: WeightsMode, in_block: bool, itemsize: int = F32) -> int:
    """Bytes one tensor takes once loaded under ``mode`` (``in_block``: inside a repeated block). ``itemsize``: the
    compute width; a half compute holds every float tensor (a quantised matrix's scales and biases too) in it
    (models/precision.py)."""
    kind = held_dtype(key, shape, mode, in_block)
    if kind == "quantized":
        return quantized_nbytes(shape, mode.bits, mode.group_size, min(F32, itemsize))
    return math.prod(shape) * min(BF16 if kind == "bfloat16" else F32, itemsize)


@dataclass(frozen=True)
class HeldBytes:
    """What a network takes under a mode: the part that stays resident, and its blocks."""

    resident: int  # everything outside the blocks (always resident)
    blocks: tuple[int, ...]  # bytes of each block once loaded under the mode
    block_float32: int  # the largest block in float32: the transient of quantising / LoRA-fusing one block
    block_stored: int  # the largest block's bytes as stored in the file (what streaming reads per block)
    largest_matrix_f32: int = 0  # the largest block matrix in float32 (a quantised layer's matmul transient on CPU)

    def total(self, streaming: bool) -> int:
        """Weights held while computing: the resident part plus all blocks, or plus one when streamed."""
        return self.resident + (max(self.blocks, default=0) if streaming else sum(self.blocks))


_BLOCK = re.compile(r"(?:^|\.)(?:transformer_blocks|layers)\.(\d+)\.")


def block_index(key: str) -> int | None:
    m = _BLOCK.search(key)
    return int(m.group(1)) if m else None


def held_bytes(tensors: dict[str, tuple[tuple[int, ...], int]], mode: WeightsMode,
               packed: dict[str, int] | None = None, itemsize: int = F32) -> HeldBytes:
    """``tensors``: key -> (shape, bytes stored in the file) of ONE network (keys as in its file).

    ``packed``: key -> float32 bytes it stands for, for tensors already quantised in the file (a
    converted file's packed weights, scales and biases): held as stored, whatever the mode (or the compute).
    ``itemsize``: the compute width (``held_nbytes``)."""
    packed = packed or {}
    resident = 0
    blocks: dict[int, int] = {}
    f32: dict[int, int] = {}
    stored: dict[int, int] = {}
    for key, (shape, stored_bytes) in tensors.items():
        i = block_index(key)
        b = stored_bytes if key in packed else held_nbytes(key, shape, mode, i is not None, itemsize)
        if i is None:
            resident += b
        else:
            blocks[i] = blocks.get(i, 0) + b
            f32[i] = f32.get(i, 0) + packed.get(key, math.prod(shape) * F32)
            stored[i] = stored.get(i, 0) + stored_bytes
    order = sorted(blocks)
    largest = max((packed.get(k, math.prod(shape) * F32) for k, (shape, _) in tensors.items()
                   if block_index(k) is not None and k.endswith(".weight") and len(shape) == 2), default=0)
    return HeldBytes(resident, tuple(blocks[i] for i in order), max(f32.values(), default=0),
                     max(stored.values(), default=0), largest)
