"""Compute precision: the dtype a network's activations are computed in.

A stage's ``compute`` parameter (``float32``, ``bfloat16`` or ``float16``) names it; it is separate from how
the weights are stored (``WeightsMode``: bf16 matrices, q8, q4, streaming). A network computing in a half
dtype holds its float weights in that dtype (a quantised layer's scales and biases too: the quantised matmul
then runs at that width), casts its inputs to it on entry, and computes in it except where the official
ltx-core computes in float32 whatever the model's dtype (the float32 islands):

- RMS/layer norms (``mx.fast.rms_norm`` / ``layer_norm`` accumulate in float32, as torch's kernels do for
  half inputs) and the one-group GroupNorm of the VAE res blocks (``norm_float32``);
- the softmax of attention (``mx.fast.scaled_dot_product_attention`` keeps its statistics in float32);
- RoPE angles and their cos/sin (host-side float64, rounded to the compute dtype once, as the official
  ``precompute_freqs_cis`` rounds them to the model's dtype);
- the sinusoidal timestep features (float32, cast to the embedder's dtype, as the official
  ``Timesteps`` + ``.to(hidden_dtype)``);
- the x0 = latent - velocity * sigma step and everything the samplers do between steps: the latent state stays
  float32 (the official pipelines keep it in the model dtype; we keep float32, the more exact choice);
- LTX-2.3's vocoder with bandwidth extension (v1.2.0 runs ``VocoderWithBWE`` under float32 autocast whatever its
  dtype): loaded and run in float32.

Outputs go back to the dtype the artifacts hold (float32 latents, waveforms, frames) in the stages.
"""

from __future__ import annotations

from collections.abc import Callable

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_map

from ltx2.spec.precision import COMPUTE

_DTYPES = dict(zip(COMPUTE, (mx.float32, mx.bfloat16, mx.float16)))


def compute_dtype(name: str) -> mx.Dtype:
    """The MLX dtype of a ``compute`` parameter value (spec.precision.COMPUTE)."""
    try:
        return _DTYPES[name]
    except KeyError:
        raise ValueError(f"compute={name!r}: use one of {', '.join(COMPUTE)}") from None


def on_gpu() -> bool:
    """MLX's default device is a GPU (Metal on Apple silicon, CUDA with mlx[cuda])."""
    return mx.default_device().type == mx.DeviceType.gpu


def auto_compute() -> str:
    """What ``compute: auto`` means here: bfloat16 on a GPU, float32 on CPU (MLX's CPU bf16 matmul is slow and
    float32 is the exact, parity-checked path)."""
    return "bfloat16" if on_gpu() else "float32"


def cast_floating(module: nn.Module, dtype: mx.Dtype) -> nn.Module:
    """Every floating parameter of ``module`` cast to ``dtype`` (packed quantised weights stay as they are; their
    scales and biases are cast), evaluated one at a time so the old copies go as the new ones come."""
    def cast(a: mx.array) -> mx.array:
        if not mx.issubdtype(a.dtype, mx.floating) or a.dtype == dtype:
            return a
        out = a.astype(dtype)
        mx.eval(out)
        return out

    module.update(tree_map(cast, module.parameters()))
    return module


def norm_float32(fn: Callable[[mx.array], mx.array], x: mx.array) -> mx.array:
    """``fn(x)`` computed in float32 and returned in ``x``'s dtype: a normalisation's statistics in float32, as
    torch's group/layer-norm kernels keep them for half inputs."""
    if x.dtype == mx.float32:
        return fn(x)
    return fn(x.astype(mx.float32)).astype(x.dtype)
