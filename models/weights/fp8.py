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

from dataclasses import replace
from typing import TYPE_CHECKING

import mlx.core as mx

if TYPE_CHECKING:  # the header types live in safetensors_file, which imports this module
    from .safetensors_file import TensorInfo

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


def fold_scales(tensors: dict[str, "TensorInfo"]) -> tuple[dict[str, "TensorInfo"], dict[str, "TensorInfo"]]:
    """Split a raw header's tensors into (parameters with their weight scales attached, companions consumed).

    A scale whose tensor is absent stays a tensor of its own, so strict loading reports it as unexpected
    rather than it vanishing silently."""
    params = dict(tensors)
    consumed: dict[str, TensorInfo] = {}
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


def dequantize(values: mx.array, scale: mx.array, key: str = "") -> mx.array:
    """``values`` (the stored numbers, float32) times their per-tensor (or per-output-row) scale, in float32."""
    scale = scale.astype(mx.float32)
    if scale.size == 1:
        return values * scale.reshape(())
    if values.ndim >= 1 and scale.size == values.shape[0] and scale.ndim <= 2:
        return values * scale.reshape((values.shape[0],) + (1,) * (values.ndim - 1))
    from .safetensors_file import CheckpointError

    raise CheckpointError(f"{key}: fp8 scale of shape {tuple(scale.shape)} does not fit a tensor of shape "
                          f"{tuple(values.shape)} (expected one scale per tensor or per output row)")


def quantize(w: mx.array) -> tuple[mx.array, mx.array]:
    """(E4M3 bits as uint8, float32 scale) with one scale per tensor: max |w| maps to 448, as the official
    per-tensor quantiser does. For writing fp8 files (tests, conversions); loading never quantises."""
    w = w.astype(mx.float32)
    amax = mx.max(mx.abs(w))
    scale = mx.where(amax > 0, amax / E4M3_MAX, mx.array(1.0, mx.float32))
    return mx.to_fp8(mx.clip(w / scale, -E4M3_MAX, E4M3_MAX)), scale.astype(mx.float32)
