"""What a guided pass switches off inside the transformer (STG and modality-isolation guidance).

One ``Perturbation`` describes one batch element's pass. A forward call takes either one
``Perturbation`` (applied to every batch element) or a sequence with one per batch element, so
several guidance passes (conditional, STG, isolated-modality) can share one batched call.

Per block and per kind the model sees one of three cases: no element perturbed (plain path), all
perturbed (the skipped computation is not run at all), or a mix (both paths are computed and
blended with a per-element 0/1 mask).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Sequence

import mlx.core as mx


class Skip(str, Enum):
    VIDEO_SELF_ATTN = "video_self_attn"  # STG: self-attention output := to_out(to_v(x))
    AUDIO_SELF_ATTN = "audio_self_attn"
    A2V_CROSS_ATTN = "a2v_cross_attn"  # audio -> video cross-attention left out
    V2A_CROSS_ATTN = "v2a_cross_attn"  # video -> audio cross-attention left out


ALL = "all"  # block selector: every block
Blocks = frozenset[int] | str  # a set of block indices, or ALL


def _blocks(sel) -> Blocks:
    if sel is None:
        return frozenset()
    if isinstance(sel, str):
        if sel != ALL:
            raise ValueError(f"block selector {sel!r}: use {ALL!r} or a list of block indices")
        return ALL
    return frozenset(int(i) for i in sel)


@dataclass(frozen=True)
class Perturbation:
    """Blocks in which each kind of attention is skipped for one batch element (empty: none)."""

    video_self_attn: Blocks = frozenset()
    audio_self_attn: Blocks = frozenset()
    a2v_cross_attn: Blocks = frozenset()
    v2a_cross_attn: Blocks = frozenset()

    def __post_init__(self):
        for k in ("video_self_attn", "audio_self_attn", "a2v_cross_attn", "v2a_cross_attn"):
            object.__setattr__(self, k, _blocks(getattr(self, k)))

    @classmethod
    def none(cls) -> "Perturbation":
        return cls()

    @classmethod
    def stg(cls, blocks, video: bool = True, audio: bool = True) -> "Perturbation":
        """Spatio-temporal guidance: self-attention replaced by its value path in ``blocks``."""
        return cls(video_self_attn=blocks if video else None, audio_self_attn=blocks if audio else None)

    @classmethod
    def isolate_modalities(cls, blocks=ALL) -> "Perturbation":
        """Modality guidance: no audio<->video cross-attention (in every block by default)."""
        return cls(a2v_cross_attn=blocks, v2a_cross_attn=blocks)

    def skips(self, kind: Skip, block: int) -> bool:
        sel = getattr(self, kind.value)
        return sel == ALL or block in sel


PerturbationArg = Perturbation | Sequence[Perturbation] | None


@dataclass(frozen=True)
class BlockSkip:
    """One block's decision for one kind: ``all``/``none`` skipped, else a (B, 1, 1) keep-mask (1 = run)."""

    all: bool
    none: bool
    keep: mx.array | None


def per_batch(perturbations: PerturbationArg, batch: int) -> tuple[Perturbation, ...]:
    if perturbations is None:
        return (Perturbation(),) * batch
    if isinstance(perturbations, Perturbation):
        return (perturbations,) * batch
    out = tuple(perturbations)
    if len(out) != batch:
        raise ValueError(f"{len(out)} perturbations given for a batch of {batch}: give one per batch element "
                         "or a single one for all")
    return out


def block_skip(perts: tuple[Perturbation, ...], kind: Skip, block: int, dtype=mx.float32) -> BlockSkip:
    flags = [p.skips(kind, block) for p in perts]
    if all(flags):
        return BlockSkip(True, False, None)
    if not any(flags):
        return BlockSkip(False, True, None)
    keep = mx.array([0.0 if f else 1.0 for f in flags], dtype=dtype).reshape(-1, 1, 1)
    return BlockSkip(False, False, keep)
