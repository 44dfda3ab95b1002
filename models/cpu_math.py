"""Transcendental-heavy steps computed with numpy when MLX runs on the CPU.

MLX's CPU backend evaluates exp, tanh and sigmoid one element at a time: on the x86 machines this project
is measured on (2 cores, OpenBLAS) ``mx.exp`` costs ~15-60 ns per element where numpy's vectorised
``np.exp`` costs ~0.5-2 ns, and ``mx.compile`` does not change that (its fused kernels call the same scalar
functions). Softmax attention at the stage-2 token count of a 768x512 render evaluates ~1.4 billion
exponentials per transformer block, the feed-forward ~100 million tanh, the VAEs' SiLUs hundreds of
millions of sigmoids: there MLX spends more time in these functions than in its matrix products.

So, on MLX's CPU device and for float32 arrays, these helpers read the evaluated MLX array through the
buffer protocol (no copy), compute with numpy, and hand back a new MLX array (one copy). Elsewhere (Metal,
CUDA, other dtypes) they are the plain MLX formulas, which is also what the numpy versions are tested
against. ``attention`` keeps the score matrix to ``query_chunk`` queries at a time, as ``attend`` does.
"""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn
import numpy as np

_GELU_C = math.sqrt(2.0 / math.pi)
# One chunk's (heads, queries, keys) float32 scores in ``attention``: 256 MiB, 341 queries of a stage-2 render's
# 6144 tokens at 32 heads. Measured there (one attention, 2 cores): 5.7 s, against 5.3 s with the 800 MiB of
# 1024-query chunks and 6.4 s with 128 MiB; the memory is the price of the larger chunks.
SCORES_BYTES = 256 << 20


def use_numpy(x: mx.array) -> bool:
    """True where ``x``'s transcendental work goes to numpy: MLX's CPU device, float32."""
    return mx.default_device().type == mx.DeviceType.cpu and x.dtype == mx.float32


def as_numpy(x: mx.array) -> np.ndarray:
    """The evaluated array's memory as a numpy array (strides kept, nothing copied)."""
    mx.eval(x)
    return np.array(x, copy=False)


def silu(x: mx.array) -> mx.array:
    """x * sigmoid(x)."""
    if not use_numpy(x):
        return nn.silu(x)
    a = as_numpy(x)
    t = np.negative(a)
    np.exp(t, out=t)
    t += 1.0
    np.divide(a, t, out=t)
    return mx.array(t)


def gelu_tanh_mlx(x: mx.array) -> mx.array:
    return 0.5 * x * (1.0 + mx.tanh(_GELU_C * (x + 0.044715 * x * x * x)))


def gelu_tanh(x: mx.array) -> mx.array:
    """GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    if not use_numpy(x):
        return gelu_tanh_mlx(x)
    a = as_numpy(x)
    t = np.square(a)
    t *= np.float32(0.044715 * _GELU_C)
    t += np.float32(_GELU_C)
    t *= a
    np.tanh(t, out=t)
    t += 1.0
    t *= a
    t *= np.float32(0.5)
    return mx.array(t)


def attention(q: mx.array, k: mx.array, v: mx.array, scale: float, mask: mx.array | None = None,
              query_chunk: int | None = None) -> mx.array:
    """softmax(q k^T * scale + mask) v on (B, heads, T, D) float32 arrays, with numpy (see the module notes).

    The scores of ``query_chunk`` queries (all heads) exist at a time; each row's exponentials are summed and
    the normalisation is applied to the (queries x D) output rather than to the score matrix.
    """
    b, h, tq, d = q.shape
    qn, kn, vn = as_numpy(q), as_numpy(k), as_numpy(v)
    mn = None
    if mask is not None:
        mn = as_numpy(mask.astype(mx.float32))
        mn = mn.reshape((1,) * (4 - mn.ndim) + mn.shape)  # (B or 1, heads or 1, Tq or 1, Tk)
    tk, dv = kn.shape[2], vn.shape[-1]
    out = np.empty((b, h, tq, dv), dtype=np.float32)
    step = tq if not query_chunk else min(query_chunk, tq)
    # at most SCORES_BYTES of scores at a time
    step = max(1, min(step, SCORES_BYTES // (h * tk * 4)))
    scores = np.empty((h, step, tk), dtype=np.float32)  # one chunk's scores, reused
    for i in range(b):
        # BLAS wants unit stride along each matrix's last axis: k^T and v made contiguous once per call
        kt = np.ascontiguousarray(kn[i].transpose(0, 2, 1))  # (heads, D, Tk)
        vi = np.ascontiguousarray(vn[i])
        mi = None if mn is None else mn[i if mn.shape[0] > 1 else 0]
        for s in range(0, tq, step):
            n = min(step, tq - s)
            sc = scores[:, :n]
            np.matmul(qn[i, :, s:s + n] * np.float32(scale), kt, out=sc)  # (heads, n, Tk); scaling q is cheaper
            if mi is not None:
                sc += mi[:, s:s + n] if mi.shape[-2] > 1 else mi
            sc -= sc.max(axis=-1, keepdims=True)
            np.exp(sc, out=sc)
            o = out[i, :, s:s + n]
            np.matmul(sc, vi, out=o)
            o /= sc.sum(axis=-1, keepdims=True)
        del kt, vi
    return mx.array(out)
