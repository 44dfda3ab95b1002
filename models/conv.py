"""Convolutions as matrix products on MLX's CPU backend (channels-last, MLX weight layouts).

MLX's CPU convolution lowers a plain (undilated, unit-stride, ungrouped) convolution to an unfolded copy of its
input and one BLAS product, but any dilated or transposed convolution goes to a naive per-output loop on one
thread: on 2 cores with OpenBLAS a kernel-3 conv1d at dilation 3 over 600 x 512 takes ~1.1 s that way against
~0.015 s as one product, and the vocoder's transposed convolutions are slower still. Here every such
convolution is written as BLAS work:

- ``conv1d``: the K dilated taps of the input, side by side in channels (one K-fold copy), times the weight
  read as an (O, K*C) matrix: a view of MLX's (O, K, C) layout, so no weight copy per call;
- ``conv_transpose1d``: every input sample times every tap at once (one product with the weight read as
  (O*K, C), again a view), then the taps are added where they overlap: output ``q*s + r`` is the sum over
  ``j`` of input ``q - j``'s tap ``j*s + r`` (a polyphase overlap-add, ceil(K/s) shifted adds);
- ``conv3d``: MLX already lowers it to an unfold and one product, but unfolds on one thread with a generic
  strided copy; here numpy makes the unfolded copy (slab by slab, the same bound as ops.conv3d_chunked, so the
  VAE's memory model holds) and its BLAS the product.

The results equal MLX's own kernels up to float32 summation order. On a GPU (Metal, CUDA) MLX's native
convolutions are used (``matmul_convs()`` is False there): they are direct kernels, not the CPU's loops.
"""

from __future__ import annotations

from collections.abc import Sequence

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from .cpu_math import as_numpy, use_numpy
from .ops import conv3d_chunked


def matmul_convs() -> bool:
    """True where convolutions run as explicit matrix products: MLX's CPU device."""
    return mx.default_device().type == mx.DeviceType.cpu


def conv1d(x: mx.array, w: mx.array, dilation: int = 1) -> mx.array:
    """Valid (unpadded) stride-1 1-D convolution: x (B, T, C), w (O, K, C) -> (B, T - dilation*(K-1), O)."""
    if not matmul_convs():
        return mx.conv1d(x, w, dilation=dilation)
    b, t, c = x.shape
    o, k, c_w = w.shape
    if c_w != c:
        raise ValueError(f"conv1d: input has {c} channels, weight expects {c_w}")
    n = t - dilation * (k - 1)
    if n <= 0:
        raise ValueError(f"conv1d: {t} samples are too few for kernel {k} at dilation {dilation}")
    if k == 1:
        return x @ w.reshape(o, c).T
    cols = mx.concatenate([x[:, j * dilation: j * dilation + n] for j in range(k)], axis=-1)  # (B, n, K*C)
    return cols @ w.reshape(o, k * c).T


def conv_transpose1d(x: mx.array, w: mx.array, stride: int, padding: int = 0) -> mx.array:
    """1-D transposed convolution (PyTorch's, output padding 0): x (B, T, C), w (O, K, C) as MLX stores a
    ConvTranspose1d weight -> (B, (T - 1)*stride - 2*padding + K, O)."""
    if not matmul_convs():
        return mx.conv_transpose1d(x, w, stride=stride, padding=padding)
    b, t, c = x.shape
    o, k, c_w = w.shape
    if c_w != c:
        raise ValueError(f"conv_transpose1d: input has {c} channels, weight expects {c_w}")
    s = stride
    m = -(-k // s)  # taps per output phase
    z = (x @ w.reshape(o * k, c).T).reshape(b, t, o, k)  # z[:, i, :, j]: input i's share of output i*s + j
    if m * s != k:
        z = mx.pad(z, [(0, 0), (0, 0), (0, 0), (0, m * s - k)])
    z = z.reshape(b, t, o, m, s)
    # output q*s + r sums z[:, q - j, :, j, r] over the m taps j of phase r
    acc = None
    for j in range(m):
        zj = mx.pad(z[:, :, :, j], [(0, 0), (j, m - 1 - j), (0, 0), (0, 0)])  # (B, T + m - 1, O, s)
        acc = zj if acc is None else acc + zj
    full = acc.transpose(0, 1, 3, 2).reshape(b, (t + m - 1) * s, o)
    n = (t - 1) * s - 2 * padding + k
    return full[:, padding: padding + n]


# Input channels from which conv3d unfolds with numpy: the real VAE's and upsampler's convolutions (128 and up).
NUMPY_CONV3D_MIN_CHANNELS = 128


def _slabs(t_out: int, h_out: int, row_bytes: int, max_temp_bytes: int) -> list[tuple[int, int, int, int]]:
    """Output (frame, row) ranges whose unfolded input stays under ``max_temp_bytes``: all frames, whole
    frames, or rows of one frame, the rule of ops.conv3d_chunked (so ops.conv3d_temp_bytes holds)."""
    frame_bytes = row_bytes * h_out
    if frame_bytes * t_out <= max_temp_bytes:
        return [(0, t_out, 0, h_out)]
    if frame_bytes <= max_temp_bytes:
        n = max(1, max_temp_bytes // frame_bytes)
        return [(t0, min(t_out, t0 + n), 0, h_out) for t0 in range(0, t_out, n)]
    n = max(1, max_temp_bytes // row_bytes)
    return [(t0, t0 + 1, r0, min(h_out, r0 + n)) for t0 in range(t_out) for r0 in range(0, h_out, n)]


def conv3d(x: mx.array, w: mx.array, bias: mx.array | None = None, stride: Sequence[int] = (1, 1, 1),
           max_temp_bytes: int = 256 << 20, min_channels: int = NUMPY_CONV3D_MIN_CHANNELS) -> mx.array:
    """Valid 3-D convolution of channels-last x (B, T, H, W, C) with w (O, kt, kh, kw, C), plus ``bias``.

    On the CPU in float32: the unfolded input (a numpy copy of the kt*kh*kw shifted views, slab by slab under
    ``max_temp_bytes`` as ops.conv3d_chunked does) times the weight read as (O, kt*kh*kw*C), by numpy's BLAS.
    MLX's own unfold there is a generic strided copy on one thread: at 128-256 channels it costs as much as the
    product itself (measured 1.5x slower in all at 128 channels, 1.1x at 1024). Elsewhere, and for inputs of
    fewer than ``min_channels`` channels (narrow test networks, where it does not matter), ops.conv3d_chunked:
    BLAS rounds a product's rows differently with the number of rows, and the narrow networks' tests hold
    tiled and untiled decodes to the same values.
    """
    if not (use_numpy(x) and use_numpy(w) and x.shape[-1] >= min_channels):
        y = conv3d_chunked(x, w, stride, max_temp_bytes)
        return y if bias is None else y + bias
    xn, wn = as_numpy(x), as_numpy(w)
    b, t_in, h_in, w_in, c = xn.shape
    o, kt, kh, kw, c_w = wn.shape
    if c_w != c:
        raise ValueError(f"conv3d: input has {c} channels, weight expects {c_w}")
    st, sh, sw = stride
    t_out, h_out, w_out = (t_in - kt) // st + 1, (h_in - kh) // sh + 1, (w_in - kw) // sw + 1
    k = kt * kh * kw * c
    w2 = np.ascontiguousarray(wn).reshape(o, k).T  # (K, O): a transposed view, BLAS reads it as it is
    out = np.empty((b, t_out, h_out, w_out, o), dtype=np.float32)
    slabs = _slabs(t_out, h_out, w_out * k * 4, max_temp_bytes)
    buf = np.empty(max((t1 - t0) * (r1 - r0) for t0, t1, r0, r1 in slabs) * w_out * k, dtype=np.float32)
    for i in range(b):
        for t0, t1, r0, r1 in slabs:
            nt, nr = t1 - t0, r1 - r0
            cols = buf[:nt * nr * w_out * k].reshape(nt, nr, w_out, k)
            j = 0
            for dt in range(kt):
                for dh in range(kh):
                    for dw in range(kw):
                        cols[..., j * c:(j + 1) * c] = xn[i, t0 * st + dt:(t1 - 1) * st + dt + 1:st,
                                                          r0 * sh + dh:(r1 - 1) * sh + dh + 1:sh,
                                                          dw:(w_out - 1) * sw + dw + 1:sw]
                        j += 1
            np.matmul(cols.reshape(-1, k), w2, out=out[i, t0:t1, r0:r1].reshape(-1, o))
    if bias is not None:
        out += as_numpy(bias)
    return mx.array(out)


class ConvTranspose1d(nn.ConvTranspose1d):
    """nn.ConvTranspose1d (same parameters) computed by ``conv_transpose1d``."""

    def __call__(self, x: mx.array) -> mx.array:
        if self.dilation != 1 or self.output_padding != 0:
            raise ValueError("ConvTranspose1d: only dilation 1 and output padding 0 are written as products")
        y = conv_transpose1d(x, self.weight, self.stride, self.padding)
        return y + self.bias if "bias" in self else y
