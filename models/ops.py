"""Small array helpers MLX lacks, shared by the LTX-2 networks.

Every helper works on channels-last arrays, MLX's convolution layout:
``(B, *spatial, C)``, e.g. ``(B, F, H, W, C)`` for video. The official PyTorch code is
channels-first; only the channel *ordering* below has to agree with it.

Channel ordering of depth_to_space / space_to_depth
---------------------------------------------------
A packed channel index is ``c * prod(f) + sub``, i.e. the original channel ``c`` is the OUTER
(slowest) index and the sub-positions inside a block are the inner ones, in the order given by
``order``. With the default ``order`` (spatial axes in their natural order) this is einops'
``"(c p1 p2 p3)"`` in ``b (c p1 p2 p3) d h w <-> b c (d p1) (h p2) (w p3)``, which the official
video VAE's up/down-sampling blocks and the latent upsampler's pixel shuffle use. The VAE's input
patchify differs: it packs the width sub-position before the height one (``"(c p r q)"`` with
``r`` on W and ``q`` on H), i.e. ``order=(0, 2, 1)`` for ``(F, H, W)``.

Convolution helpers
-------------------
``pad_video`` pads a clip for a 3-D convolution the way the VAE's causal convolutions do (edge
frames repeated in time; zeros, reflection or replication in space); ``conv3d_chunked`` runs a
3-D convolution in slabs so MLX's unfolded-input buffer stays bounded, and
``conv3d_temp_bytes`` says how big that buffer gets. (No grouped 3-D convolution: the video VAE
does not use one.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import mlx.core as mx

PAD_MODES = ("zeros", "reflect", "replicate")


def _natural(order: Sequence[int] | None, n: int) -> tuple[int, ...]:
    order = tuple(range(n)) if order is None else tuple(order)
    if sorted(order) != list(range(n)):
        raise ValueError(f"order {order} is not a permutation of the {n} spatial axes")
    return order


def depth_to_space(x: mx.array, factors: Sequence[int], order: Sequence[int] | None = None) -> mx.array:
    """(B, d0..dn-1, c*prod(f)) -> (B, d0*f0, .., dn-1*fn-1, c): pixel shuffle in 1, 2 or 3 D."""
    n = len(factors)
    order = _natural(order, n)
    b, *dims, ch = x.shape
    if len(dims) != n:
        raise ValueError(f"expected {n} spatial axes, got shape {x.shape}")
    block = math.prod(factors)
    if ch % block:
        raise ValueError(f"{ch} channels do not split into blocks of {block} ({tuple(factors)})")
    c = ch // block
    x = x.reshape(b, *dims, c, *[factors[a] for a in order])
    # axes now: 0 batch, 1..n spatial, n+1 channel, n+2+j sub-position of spatial axis order[j]
    perm = [0]
    for a in range(n):
        perm += [1 + a, n + 2 + order.index(a)]
    perm.append(n + 1)
    return x.transpose(perm).reshape(b, *[d * f for d, f in zip(dims, factors)], c)


def space_to_depth(x: mx.array, factors: Sequence[int], order: Sequence[int] | None = None) -> mx.array:
    """(B, d0*f0, .., c) -> (B, d0, .., c*prod(f)): the exact inverse of depth_to_space."""
    n = len(factors)
    order = _natural(order, n)
    b, *dims, c = x.shape
    if len(dims) != n or any(d % f for d, f in zip(dims, factors)):
        raise ValueError(f"shape {x.shape} does not divide into blocks of {tuple(factors)}")
    split = []
    for d, f in zip(dims, factors):
        split += [d // f, f]
    x = x.reshape(b, *split, c)
    # axes now: 0 batch, 1+2a block index of axis a, 2+2a sub-position of axis a, 2n+1 channel
    perm = [0] + [1 + 2 * a for a in range(n)] + [2 * n + 1] + [2 + 2 * a for a in order]
    return x.transpose(perm).reshape(b, *[d // f for d, f in zip(dims, factors)], c * math.prod(factors))


def causal_time_padding(kernel_t: int, causal: bool) -> tuple[int, int]:
    """Frames to repeat in front / behind for a temporal kernel: all in front when causal, else split."""
    return (kernel_t - 1, 0) if causal else ((kernel_t - 1) // 2, (kernel_t - 1) // 2)


def pad_spatial(x: mx.array, pad: int, mode: str, axes: Sequence[int] = (2, 3)) -> mx.array:
    """Pad ``axes`` (default H, W of (B, F, H, W, C)) by ``pad`` on both sides: zeros, reflect or replicate."""
    if mode not in PAD_MODES:
        raise ValueError(f"padding mode {mode!r} is not one of {PAD_MODES}")
    if pad == 0:
        return x
    if mode == "zeros":
        widths = [(0, 0)] * x.ndim
        for a in axes:
            widths[a] = (pad, pad)
        return mx.pad(x, widths)
    for a in axes:
        x = mx.take(x, mx.array(_edge_index(x.shape[a], pad, mode)), axis=a)
    return x


def _edge_index(n: int, pad: int, mode: str) -> list[int]:
    if mode == "replicate":
        return [0] * pad + list(range(n)) + [n - 1] * pad
    if pad >= n:
        raise ValueError(f"reflect padding {pad} needs an axis longer than {pad}, got length {n}")
    return list(range(pad, 0, -1)) + list(range(n)) + list(range(n - 2, n - 2 - pad, -1))


def pad_video(x: mx.array, front: int, back: int, pad: int, mode: str) -> mx.array:
    """Pad (B, F, H, W, C) for a 3-D convolution: repeat edge frames in time, pad H and W by ``pad``.

    One gather builds the padded copy for reflect / replicate (three chained pads would hold up to
    three copies at once); zero padding is a frame gather then mx.pad.
    """
    if mode not in PAD_MODES:
        raise ValueError(f"padding mode {mode!r} is not one of {PAD_MODES}")
    _, t, h, w, _ = x.shape
    t_idx = [0] * front + list(range(t)) + [t - 1] * back
    if mode == "zeros" or pad == 0:
        if front or back:
            x = mx.take(x, mx.array(t_idx), axis=1)
        return pad_spatial(x, pad, "zeros")
    ti = mx.array(t_idx)[:, None, None]
    hi = mx.array(_edge_index(h, pad, mode))[None, :, None]
    wi = mx.array(_edge_index(w, pad, mode))[None, None, :]
    return x[:, ti, hi, wi]


def conv3d_chunked(x: mx.array, weight: mx.array, stride: Sequence[int] = (1, 1, 1),
                   max_temp_bytes: int = 256 << 20) -> mx.array:
    """Valid (unpadded) 3-D convolution of channels-last ``x`` with MLX-layout ``weight`` (O, kt, kh, kw, I).

    MLX lowers a 3-D convolution to one matrix product over an unfolded copy of its input, which
    is kt*kh*kw (27 for a 3x3x3 kernel) times the input's size. For video activations that copy
    dominates memory, so the output is computed in slabs of frames (and of rows when one frame is
    already too big) whose unfolded input stays under ``max_temp_bytes``. Each slab is evaluated
    before the next is built: MLX runs ahead and would otherwise hold every slab's buffer at once.
    Same result, bounded peak (not for use under mx.compile).
    """
    b, t_in, h_in, w_in, cin = x.shape
    _, kt, kh, kw, _ = weight.shape
    st, sh, sw = stride
    t_out = (t_in - kt) // st + 1
    h_out = (h_in - kh) // sh + 1
    w_out = (w_in - kw) // sw + 1
    row_bytes = b * w_out * kt * kh * kw * cin * x.itemsize
    frame_bytes = row_bytes * h_out
    if frame_bytes * t_out <= max_temp_bytes:
        return mx.conv3d(x, weight, stride=tuple(stride))
    if frame_bytes <= max_temp_bytes:
        n = max(1, max_temp_bytes // frame_bytes)
        slabs = [_evaluated(mx.conv3d(x[:, t0 * st:(min(t_out, t0 + n) - 1) * st + kt], weight, stride=tuple(stride)))
                 for t0 in range(0, t_out, n)]
        return mx.concatenate(slabs, axis=1)
    n = max(1, max_temp_bytes // row_bytes)
    frames = []
    for t0 in range(t_out):
        xt = x[:, t0 * st:t0 * st + kt]
        rows = [_evaluated(mx.conv3d(xt[:, :, r0 * sh:(min(h_out, r0 + n) - 1) * sh + kh], weight,
                                     stride=tuple(stride)))
                for r0 in range(0, h_out, n)]
        frames.append(_evaluated(mx.concatenate(rows, axis=2)))
    return mx.concatenate(frames, axis=1)


def _evaluated(a: mx.array) -> mx.array:
    mx.eval(a)
    return a


def conv3d_temp_bytes(in_shape: Sequence[int], kernel: Sequence[int], stride: Sequence[int] = (1, 1, 1),
                      max_temp_bytes: int = 256 << 20, itemsize: int = 4) -> int:
    """The largest unfolded-input buffer conv3d_chunked allocates for a padded input of ``in_shape``."""
    b, t_in, h_in, w_in, cin = in_shape
    kt, kh, kw = kernel
    t_out = (t_in - kt) // stride[0] + 1
    h_out = (h_in - kh) // stride[1] + 1
    w_out = (w_in - kw) // stride[2] + 1
    row = b * w_out * kt * kh * kw * cin * itemsize
    full = row * h_out * t_out
    if full <= max_temp_bytes:
        return full
    frame = row * h_out
    if frame <= max_temp_bytes:
        return frame * min(t_out, max(1, max_temp_bytes // frame))
    return row * min(h_out, max(1, max_temp_bytes // row))


def conform_length(x: mx.array, length: int, axis: int = 2) -> mx.array:
    """``x`` truncated, or zero-padded at the end, to ``length`` along ``axis``: how the official pipelines fit an
    encoded latent (B, C, F, ...) to the clip it conditions (``_conform_latent_length``)."""
    have = x.shape[axis]
    if have >= length:
        keep = [slice(None)] * x.ndim
        keep[axis] = slice(0, length)
        return x[tuple(keep)]
    shape = list(x.shape)
    shape[axis] = length - have
    return mx.concatenate([x, mx.zeros(shape, x.dtype)], axis=axis)
