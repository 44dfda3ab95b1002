"""Fusing a LoRA file into checkpoint weights on load: ``W += strength * B @ A``.

The official LoRA files (e.g. the distilled LoRA of the two-stage pipeline) hold, per adapted Linear,
``diffusion_model.<module path>.lora_A.weight`` (rank, in) and ``...lora_B.weight`` (out, rank).
The official loader drops the leading ``diffusion_model.`` and adapts the checkpoint tensor
``<module path>.weight`` of the transformer (keys relative to ``model.diffusion_model.``), with no
alpha / rank rescaling: the delta is exactly ``(strength * B) @ A``. It silently skips LoRA pairs
that match no weight; here that is an error naming them, because a LoRA made for another model
would otherwise change nothing without a word.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx

from .safetensors_file import CheckpointError, SafetensorsHeader, load_tensors, read_header

LORA_PREFIX = "diffusion_model."
_A, _B = ".lora_A.weight", ".lora_B.weight"


def lora_targets(keys) -> dict[str, tuple[str, str]]:
    """Target weight key (prefix-free, ``<path>.weight``) -> (lora_A key, lora_B key) in a LoRA file.

    Keys other than ``lora_A`` / ``lora_B`` weights (e.g. an ``alpha``) are ignored, as the official
    loader ignores them; an A without its B (or the reverse) is an error."""
    keys = set(keys)
    out: dict[str, tuple[str, str]] = {}
    unpaired = []
    for k in sorted(keys):
        if not k.endswith(_A):
            if k.endswith(_B) and k[: -len(_B)] + _A not in keys:
                unpaired.append(k)
            continue
        stem = k[: -len(_A)]
        if stem + _B not in keys:
            unpaired.append(k)
            continue
        path = stem[len(LORA_PREFIX):] if stem.startswith(LORA_PREFIX) else stem
        out[path + ".weight"] = (k, stem + _B)
    if unpaired:
        raise CheckpointError(f"LoRA: {len(unpaired)} lora_A/lora_B tensor(s) without their partner, e.g. "
                              f"{unpaired[:3]}")
    return out


@dataclass(frozen=True)
class LoraPlan:
    """One LoRA file's pairs, checked against a network's tensors: (tensor name, lora_A key, lora_B key)."""

    header: SafetensorsHeader
    strength: float
    pairs: tuple[tuple[str, str, str], ...]


def plan_lora(lora_path: str | Path, strength: float, shapes: Mapping[str, tuple[int, ...]],
              name_of: Callable[[str], str | None] = lambda target: target) -> LoraPlan:
    """Match a LoRA file's pairs to the tensors ``shapes`` describes (name -> (out, in) of the weight).

    ``name_of`` maps a target (``<path>.weight``, the LoRA file's naming) to the tensor name it adapts, or to
    None for a target the caller deliberately does not hold (e.g. the text connectors, which sit under the
    transformer's prefix but are loaded elsewhere): those pairs are skipped. Any other pair that matches no
    tensor, or (at a non-zero strength) whose shapes do not fit it, is an error naming it."""
    header = read_header(lora_path)
    targets = lora_targets(header.tensors)
    if not targets:
        raise CheckpointError(f"{header.path}: no '*.lora_A.weight' / '*.lora_B.weight' pairs: not a LoRA file")
    pairs, unmatched, bad = [], [], []
    for target, (ka, kb) in targets.items():
        name = name_of(target)
        if name is None:
            continue
        if name not in shapes:
            unmatched.append(ka)
            continue
        a, b, w = header.tensors[ka].shape, header.tensors[kb].shape, tuple(shapes[name])
        if len(a) != 2 or len(b) != 2 or a[0] != b[1] or (b[0], a[1]) != w:
            bad.append(f"{ka} {a} / {kb} {b} vs weight {target} {w}")
            continue
        pairs.append((name, ka, kb))
    if unmatched:
        raise CheckpointError(
            f"{header.path}: {len(unmatched)} LoRA tensor pair(s) match no weight of the model, e.g. "
            + ", ".join(sorted(unmatched)[:5]) + " (is this LoRA made for this checkpoint?)")
    if bad and strength != 0:
        raise CheckpointError(f"{header.path}: LoRA shapes do not fit the weights they adapt (B @ A must be "
                              "(out, in)): " + "; ".join(bad[:5]))
    return LoraPlan(header, float(strength), tuple(pairs))


def apply_lora(tensors: dict[str, mx.array], plan: LoraPlan,
               quantization: tuple[int, int] | None = None) -> dict[str, mx.array]:
    """``W += strength * B @ A`` (in float32, stored back in W's dtype) into the plan's tensors that are among
    ``tensors`` (in place; returns it). A weight held affine-quantised (its ``.scales`` beside it, ``quantization``
    its (bits, group_size)) is dequantised, adapted and quantised again: one more rounding."""
    if plan.strength == 0:
        return tensors
    for name, ka, kb in plan.pairs:
        if name not in tensors:
            continue
        ab = load_tensors(plan.header, [ka, kb], mx.float32)
        delta = (ab[kb] * plan.strength) @ ab[ka]
        w = tensors[name]
        stem = name[: -len(".weight")]
        if stem + ".scales" in tensors:
            if quantization is None:
                raise CheckpointError(f"{name}: quantised, but its bits / group size are not known")
            bits, group_size = quantization
            scales, biases = tensors[stem + ".scales"], tensors[stem + ".biases"]
            full = mx.dequantize(w, scales, biases, group_size=group_size, bits=bits).astype(mx.float32)
            wq, s, b = mx.quantize(full + delta, group_size, bits)
            tensors[name], tensors[stem + ".scales"], tensors[stem + ".biases"] = (
                wq, s.astype(scales.dtype), b.astype(biases.dtype))
        elif not mx.issubdtype(w.dtype, mx.floating):
            raise CheckpointError(f"{name}: a packed quantised weight read without its scales")
        else:
            tensors[name] = (w.astype(mx.float32) + delta).astype(w.dtype)
    return tensors


def fuse_lora(weights: dict[str, mx.array], lora_path: str | Path, strength: float = 1.0, *,
              ignore_prefixes: tuple[str, ...] = ()) -> dict[str, mx.array]:
    """``weights`` (float tensors named like the LoRA's targets: checkpoint names relative to
    ``model.diffusion_model.``) with the LoRA fused in; returns a new dict (unchanged tensors are shared).

    ``ignore_prefixes``: target paths the caller deliberately does not hold; LoRA pairs for them are
    skipped. Any other pair that matches no weight, or whose shapes do not fit it, is an error.
    Loaders fuse through their weight source (models/weights/source.py), which plans and applies LoRAs
    with the same two functions on module-named tensors."""
    ignore = tuple(ignore_prefixes)
    plan = plan_lora(lora_path, strength, {k: tuple(v.shape) for k, v in weights.items()},
                     lambda t: None if t.startswith(ignore) else t)
    return apply_lora(dict(weights), plan)
