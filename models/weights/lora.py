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

from pathlib import Path

import mlx.core as mx

from .safetensors_file import CheckpointError, load_tensors, read_header

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


def fuse_lora(weights: dict[str, mx.array], lora_path: str | Path, strength: float = 1.0, *,
              ignore_prefixes: tuple[str, ...] = ()) -> dict[str, mx.array]:
    """``weights`` (checkpoint names relative to ``model.diffusion_model.``, PyTorch layouts, as read
    before ``sanitize``) with the LoRA fused in; returns a new dict (unchanged tensors are shared).

    ``ignore_prefixes``: target paths the caller deliberately does not hold (e.g. the text connectors,
    which sit under the transformer's prefix but are loaded elsewhere); LoRA pairs for them are
    skipped. Any other pair that matches no weight, or whose shapes do not fit it, is an error.
    """
    header = read_header(lora_path)
    targets = lora_targets(header.tensors)
    if not targets:
        raise CheckpointError(f"{header.path}: no '*.lora_A.weight' / '*.lora_B.weight' pairs: not a LoRA file")
    targets = {t: ab for t, ab in targets.items() if not t.startswith(tuple(ignore_prefixes))}
    unmatched = sorted(ab[0] for t, ab in targets.items() if t not in weights)
    if unmatched:
        raise CheckpointError(
            f"{header.path}: {len(unmatched)} LoRA tensor pair(s) match no weight of the model, e.g. "
            + ", ".join(unmatched[:5]) + " (is this LoRA made for this checkpoint?)")
    out = dict(weights)
    if strength == 0 or not targets:
        return out
    bad = []
    for target, (ka, kb) in targets.items():
        w = weights[target]
        a_info, b_info = header.tensors[ka].shape, header.tensors[kb].shape
        if (len(a_info) != 2 or len(b_info) != 2 or a_info[0] != b_info[1]
                or (b_info[0], a_info[1]) != tuple(w.shape)):
            bad.append(f"{ka} {a_info} / {kb} {b_info} vs weight {target} {tuple(w.shape)}")
            continue
        ab = load_tensors(header, [ka, kb], mx.float32)
        delta = (ab[kb] * strength) @ ab[ka]  # float32, then back to the weight's dtype
        out[target] = (w.astype(mx.float32) + delta).astype(w.dtype)
    if bad:
        raise CheckpointError(f"{header.path}: LoRA shapes do not fit the weights they adapt (B @ A must be "
                              "(out, in)): " + "; ".join(bad[:5]))
    return out
