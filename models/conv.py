"""Convolutions as matrix products on MLX's CPU backend (channels-last, MLX weight layouts).

MLX's CPU convolution lowers a plain (undilated, unit-stride, ungrouped) convolution to an unfolded copy of its
input and one BLAS product, but any dilated or transposed convolution goes to a naive per-output loop on one
thread: on 2 cores with OpenBLAS a kernel-3 conv1d at dilation 3 over 600 x 512 takes ~1.1 s that way against
~0.015 s as one product, and the vocoder's transposed convolutions are slower still. Here every such
convolution is written as BLAS work:

- ``conv1d``: one product per tap, accumulated inside BLAS (``addmm``), each tap reading its shifted rows of the
  input in place; for short inputs (tap products too small for BLAS to run at speed) the K dilated taps side by
  side in channels (one K-fold copy) times the weight read as an (O, K*C) matrix, a view of MLX's (O, K, C) layout;
- ``conv_transpose1d``: every input sample times every tap at once (one product with the weight read as
  (O*K, C), again a view), then the taps are added where they overlap: output ``q*s + r`` is the sum over
  ``j`` of input ``q - j``'s tap ``j*s + r`` (a polyphase overlap-add, ceil(K/s) shifted adds);
- ``conv3d`` and ``conv2d``: MLX lowers these to an unfolded copy (27-fold for 3x3x3) made by a generic strided
  copy on one thread, then one product. Where the padding is a small share of the output (the VAEs' larger
  levels), one product per tap over the flattened input instead, with no copy at all (``_conv3d_taps``);
  elsewhere (small latents at 1024 channels, where the unfolded product runs nearer BLAS's peak) numpy makes
  the unfolded copy and its BLAS the product. Both go slab by slab under the bound of ops.conv3d_chunked, so
  the VAEs' memory model holds.

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


# From this many output rows a convolution is one product per tap (no unfolded copy of the input), below it one
# product over the unfolded input: short inputs make tap products too small for BLAS to run at speed (measured on
# the vocoder's and the VAEs' shapes, benchmarks/compare_official.py).
TAPS_MIN_ROWS = 2048
# 3-D convolutions by taps compute the padded rows and columns too (see _conv3d_taps): only where those are at
# most this share of the output (the VAEs' larger levels, the audio VAE's; not an 8 x 12 latent: 46%).
TAPS_MAX_WASTE = 1.15
# Default bound on a convolution's temporary buffers (unfolded input, or tap products), as ops.conv3d_chunked's.
MAX_TEMP_BYTES = 256 << 20


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
    if n >= TAPS_MIN_ROWS:
        # one product per tap, accumulated inside BLAS (addmm): tap j reads the rows j*dilation onwards in place
        wt = w.transpose(1, 2, 0)  # (K, C, O): tap j's (C, O) matrix, a view
        y = x[:, :n] @ wt[0]
        for j in range(1, k):
            y = mx.addmm(y, x[:, j * dilation: j * dilation + n], wt[j])
        return y
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
           max_temp_bytes: int = MAX_TEMP_BYTES, min_channels: int = NUMPY_CONV3D_MIN_CHANNELS) -> mx.array:
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
    _, _, h_in, w_in, _ = x.shape
    _, _, kh, kw, _ = w.shape
    if tuple(stride) == (1, 1, 1) and h_in * w_in <= TAPS_MAX_WASTE * (h_in - kh + 1) * (w_in - kw + 1):
        return _conv3d_taps(x, w, bias, max_temp_bytes)
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


def _conv3d_taps(x: mx.array, w: mx.array, bias: mx.array | None, max_temp_bytes: int) -> mx.array:
    """Stride-1 3-D convolution as one product per tap, accumulated by BLAS (addmm), with no unfolded copy.

    Flattened, the input is (T*H*W, C) rows and tap (dt, dh, dw) of output voxel p is input row
    p + dt*H*W + dh*W + dw: for a run of outputs every tap reads one contiguous block of rows, a view. The run
    covers the padded rows and columns of each frame too (H*W rows per frame, not h_out*w_out), which a strided
    view of the result skips; conv3d takes this path only where they are few. Output slabs (of frames, or of rows
    of one frame) stay under half of ``max_temp_bytes`` (the product being accumulated and the next one), each
    evaluated before the next is built, so ops.conv3d_temp_bytes bounds this path too.
    """
    b, t_in, h_in, w_in, c = x.shape
    o, kt, kh, kw, c_w = w.shape
    if c_w != c:
        raise ValueError(f"conv3d: input has {c} channels, weight expects {c_w}")
    t_out, h_out, w_out = t_in - kt + 1, h_in - kh + 1, w_in - kw + 1
    plane = h_in * w_in
    flat = x.reshape(b, t_in * plane, c)
    wt = w.reshape(o, kt * kh * kw, c).transpose(1, 2, 0)  # (taps, C, O): tap j's (C, O) matrix, a view
    offsets = [dt * plane + dh * w_in + dw for dt in range(kt) for dh in range(kh) for dw in range(kw)]
    ranges = _slabs(t_out, h_out, b * w_in * o * x.itemsize, max_temp_bytes // 2)
    slabs = []
    for t0, t1, r0, r1 in ranges:
        nt, nr = t1 - t0, r1 - r0
        start = t0 * plane + r0 * w_in
        n = (nt - 1) * plane + (nr - 1) * w_in + w_out  # the rows from the slab's first output to its last
        y = None
        for j, off in enumerate(offsets):
            xs = flat[:, start + off: start + off + n]
            if y is None:
                y = xs @ wt[j] if bias is None else mx.addmm(bias, xs, wt[j])
            else:
                y = mx.addmm(y, xs, wt[j])
        # the valid voxels, read in place: frame stride H*W rows, row stride W rows (no copy to drop the padding)
        y = mx.as_strided(y, (b, nt, nr, w_out, o), (n * o, plane * o, w_in * o, o, 1))
        mx.eval(y)
        slabs.append(y)
    if len(slabs) == 1:
        return slabs[0]
    frames = {}
    for (t0, _, _, _), y in zip(ranges, slabs):
        frames.setdefault(t0, []).append(y)
    return mx.concatenate([ys[0] if len(ys) == 1 else mx.concatenate(ys, axis=2) for ys in frames.values()], axis=1)


def conv2d(x: mx.array, w: mx.array, bias: mx.array | None = None,
           min_channels: int = NUMPY_CONV3D_MIN_CHANNELS) -> mx.array:
    """Valid stride-1 2-D convolution of channels-last x (B, H, W, C) with w (O, kh, kw, C), plus ``bias``.

    On the CPU in float32, from ``min_channels`` input channels and where the padding is a small share: one
    product per tap (``_conv3d_taps`` with a one-frame kernel; 1.2-2.4x faster than MLX's unfold at the audio
    VAE's shapes). Elsewhere MLX's own convolution (narrow test networks: see conv3d).
    """
    _, h, wd, c = x.shape
    _, kh, kw, _ = w.shape
    if not (use_numpy(x) and use_numpy(w) and c >= min_channels
            and h * wd <= TAPS_MAX_WASTE * (h - kh + 1) * (wd - kw + 1)):
        y = mx.conv2d(x, w)
        return y if bias is None else y + bias
    return _conv3d_taps(x[:, None], w[:, None], bias, MAX_TEMP_BYTES)[:, 0]


class ConvTranspose1d(nn.ConvTranspose1d):
    """nn.ConvTranspose1d (same parameters) computed by ``conv_transpose1d``."""

    def __call__(self, x: mx.array) -> mx.array:
        if self.dilation != 1 or self.output_padding != 0:
            raise ValueError("ConvTranspose1d: only dilation 1 and output padding 0 are written as products")
        y = conv_transpose1d(x, self.weight, self.stride, self.padding)
        return y + self.bias if "bias" in self else y
