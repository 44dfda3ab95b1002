"""fp8 (E4M3) checkpoints: which tensors carry scales, and how a stored value becomes a weight.

Official LTX-2 fp8 files come in two layouts, and both load through every loader here:

- **scaled** (the published ``ltx-2-19b-{dev,distilled}-fp8.safetensors``, and LTX-2.3's fp8 files): the
  Linear weights of transformer blocks 1-42 are stored as ``F8_E4M3`` in the PyTorch (out, in) layout,
  each with two F32 scalars beside it: ``<module>.weight_scale`` and ``<module>.input_scale``. Blocks 0
  and 43-47, biases, norms, embeddings, the VAEs and the vocoder stay bf16. The weight is
  ``float(e4m3) * weight_scale``: the official code dequantises so when it fuses a LoRA into such a
  weight, and (in later releases) when its fp8-cast policy folds the scales on load. ``input_scale`` is
  the static activation scale of the fp8 x fp8 matmul kernel (Hopper GPUs); once the weight is
  dequantised it has no meaning, so it is read past and dropped (activations stay in the compute dtype).
- **cast-only** (what the official fp8-cast policy holds after down-casting a bf16 checkpoint): E4M3
  weights *and biases* with no scale at all; the weight is the E4M3 value itself (scale 1).

ComfyUI's spellings ``scale_weight`` / ``scale_input`` are accepted too, and a ``bias_scale`` (which later
official releases also fold) scales its bias. :func:`fold_scales` attaches each scale to the tensor it
scales when the header is read, so loaders list only real parameters and strict loading still names any
stray key; :func:`dequantize` applies the scale on read, in float32, before the cast to the compute dtype.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import TypeVar

import mlx.core as mx

# a header's record of one tensor (safetensors_file.TensorInfo, whose module imports this one): a dataclass
# with ``scale`` and ``scale_key`` fields
Info = TypeVar("Info")

E4M3_MAX = 448.0  # largest finite float8_e4m3fn value

# companion suffix -> (suffix of the tensor it belongs to, what it is)
COMPANIONS: dict[str, tuple[str, str]] = {
    ".weight_scale": (".weight", "weight scale"),
    ".scale_weight": (".weight", "weight scale"),
    ".bias_scale": (".bias", "weight scale"),
    ".input_scale": (".weight", "activation scale"),
    ".scale_input": (".weight", "activation scale"),
}


def companion_parent(key: str) -> tuple[str, str] | None:
    """(key of the tensor ``key`` scales, kind) if ``key`` is named like an fp8 companion scale, else None."""
    for suffix, (parent_suffix, kind) in COMPANIONS.items():
        if key.endswith(suffix):
            return key[: -len(suffix)] + parent_suffix, kind
    return None


def fold_scales(tensors: Mapping[str, Info]) -> tuple[dict[str, Info], dict[str, Info]]:
    """Split a raw header's tensors into (parameters with their weight scales attached, companions consumed).

    A scale whose tensor is absent stays a tensor of its own, so strict loading reports it as unexpected
    rather than it vanishing silently."""
    params = dict(tensors)
    consumed: dict[str, Info] = {}
    for key, info in tensors.items():
        found = companion_parent(key)
        if found is None or found[0] not in tensors:
            continue
        parent, kind = found
        if kind == "weight scale":
            params[parent] = replace(params[parent], scale=info, scale_key=key)
        consumed[key] = info
        del params[key]
    return params, consumed


def scale_misfit(shape: tuple[int, ...], scale_shape: tuple[int, ...]) -> str | None:
    """Why a weight scale of ``scale_shape`` cannot scale a tensor of ``shape``; None if it can (one scale per
    tensor, or one per output row)."""
    size = math.prod(scale_shape)
    if size == 1 or (len(shape) >= 1 and size == shape[0] and len(scale_shape) <= 2):
        return None
    return (f"fp8 scale of shape {tuple(scale_shape)} does not fit a tensor of shape {tuple(shape)} (expected one "
            "scale per tensor or per output row)")


def dequantize(values: mx.array, scale: mx.array) -> mx.array:
    """``values`` (the stored numbers, float32) times their per-tensor (or per-output-row) scale, in float32
    (a scale that fits: :func:`scale_misfit`)."""
    scale = scale.astype(mx.float32)
    if scale.size == 1:
        return values * scale.reshape(())
    return values * scale.reshape((values.shape[0],) + (1,) * (values.ndim - 1))


def quantize(w: mx.array) -> tuple[mx.array, mx.array]:
    """(E4M3 bits as uint8, float32 scale) with one scale per tensor: max |w| maps to 448, as the official
    per-tensor quantiser does. For writing fp8 files (tests, conversions); loading never quantises."""
    w = w.astype(mx.float32)
    amax = mx.max(mx.abs(w))
    scale = mx.where(amax > 0, amax / E4M3_MAX, mx.array(1.0, mx.float32))
    return mx.to_fp8(mx.clip(w / scale, -E4M3_MAX, E4M3_MAX)), scale.astype(mx.float32)
