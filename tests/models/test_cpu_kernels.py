"""The CPU formulations (models/conv.py, models/cpu_math.py) against MLX's own convolutions and formulas."""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn
import pytest

from ltx2.models import conv, cpu_math


def _rel(a: mx.array, b: mx.array) -> float:
    return float(mx.linalg.norm((a - b).reshape(-1)) / mx.linalg.norm(b.reshape(-1)))


@pytest.fixture(autouse=True)
def _cpu():
    """These formulations are MLX's CPU path (on a GPU MLX's own kernels run): test them there."""
    before = mx.default_device()
    mx.set_default_device(mx.cpu)
    yield
    mx.set_default_device(before)


@pytest.mark.parametrize("b,t,c,o,k,d", [(1, 50, 8, 6, 3, 3), (2, 80, 5, 7, 11, 5), (1, 9, 4, 3, 1, 1),
                                         (1, 30, 6, 6, 7, 1)])
def test_conv1d_equals_mlx(b, t, c, o, k, d):
    x, w = mx.random.normal((b, t, c), key=mx.random.key(1)), mx.random.normal((o, k, c), key=mx.random.key(2))
    got = conv.conv1d(x, w, d)
    assert got.shape == (b, t - d * (k - 1), o)
    assert _rel(got, mx.conv1d(x, w, dilation=d)) < 1e-6


@pytest.mark.parametrize("b,t,c,o,k,s,p", [(1, 10, 8, 6, 16, 6, 5), (2, 7, 5, 3, 15, 5, 5), (1, 5, 4, 4, 4, 2, 1),
                                           (1, 6, 3, 2, 8, 2, 3), (1, 4, 3, 2, 3, 2, 0), (1, 9, 2, 2, 12, 2, 0)])
def test_conv_transpose1d_equals_mlx(b, t, c, o, k, s, p):
    x, w = mx.random.normal((b, t, c), key=mx.random.key(3)), mx.random.normal((o, k, c), key=mx.random.key(4))
    ref = mx.conv_transpose1d(x, w, stride=s, padding=p)
    got = conv.conv_transpose1d(x, w, s, p)
    assert got.shape == ref.shape
    assert _rel(got, ref) < 1e-6
    m = conv.ConvTranspose1d(c, o, k, stride=s, padding=p)
    m.bias = mx.random.normal((o,), key=mx.random.key(5))
    assert _rel(m(x), nn.ConvTranspose1d.__call__(m, x)) < 1e-6  # the module keeps MLX's parameters and meaning


def test_cpu_math_matches_mlx_formulas():
    x = mx.random.normal((3, 17, 40), key=mx.random.key(8)) * 4
    assert cpu_math.use_numpy(x)
    assert _rel(cpu_math.silu(x), nn.silu(x)) < 1e-6
    c = math.sqrt(2 / math.pi)
    assert _rel(cpu_math.gelu_tanh(x), 0.5 * x * (1 + mx.tanh(c * (x + 0.044715 * x ** 3)))) < 1e-6
    # a transposed (strided) input is read as it is laid out
    xt = x.transpose(2, 0, 1)
    assert _rel(cpu_math.silu(xt), nn.silu(xt)) < 1e-6
    assert not cpu_math.use_numpy(x.astype(mx.bfloat16))  # numpy has no bfloat16: MLX's own ops there


@pytest.mark.parametrize("mask_shape", [None, (2, 1, 1, 23), (2, 1, 19, 23), (1, 4, 19, 23)])
@pytest.mark.parametrize("chunk", [None, 5])
def test_cpu_attention_equals_mlx_sdpa(mask_shape, chunk):
    keys = mx.random.split(mx.random.key(9), 4)
    q = mx.random.normal((2, 4, 19, 8), key=keys[0])
    k = mx.random.normal((2, 4, 23, 8), key=keys[1])
    v = mx.random.normal((2, 4, 23, 8), key=keys[2])
    mask = None
    if mask_shape is not None:
        mask = mx.where(mx.random.uniform(shape=mask_shape, key=keys[3]) < 0.3, -1e30, 0.0)
    ref = mx.fast.scaled_dot_product_attention(q, k, v, scale=8 ** -0.5, mask=mask)
    assert _rel(cpu_math.attention(q, k, v, 8 ** -0.5, mask, chunk), ref) < 1e-5


@pytest.mark.parametrize("stride", [(1, 1, 1), (2, 2, 2), (1, 2, 1)])
@pytest.mark.parametrize("budget", [1 << 30, 6_000, 1_500])  # one product / slabs of frames / rows of a frame
def test_conv3d_equals_mlx(stride, budget):
    x = mx.random.normal((2, 5, 7, 6, 3), key=mx.random.key(10))
    w = mx.random.normal((4, 3, 3, 2, 3), key=mx.random.key(11))
    bias = mx.random.normal((4,), key=mx.random.key(12))
    got = conv.conv3d(x, w, bias, stride, budget, min_channels=0)
    ref = mx.conv3d(x, w, stride=stride) + bias
    assert got.shape == ref.shape
    assert _rel(got, ref) < 1e-6


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("budget", [1 << 30, 2_000, 300])  # one product / slabs of frames / rows of a frame
def test_conv3d_by_taps_equals_mlx(bias, budget):
    x = mx.random.normal((2, 5, 7, 6, 3), key=mx.random.key(13))
    w = mx.random.normal((4, 3, 3, 2, 3), key=mx.random.key(14))
    b = mx.random.normal((4,), key=mx.random.key(15)) if bias else None
    got = conv._conv3d_taps(x, w, b, budget)
    ref = mx.conv3d(x, w)
    ref = ref if b is None else ref + b
    assert got.shape == ref.shape
    assert _rel(got, ref) < 1e-6


def test_conv3d_takes_taps_only_where_padding_is_a_small_share(monkeypatch):
    taken = []
    monkeypatch.setattr(conv, "_conv3d_taps", lambda *a: taken.append(a[0].shape) or mx.zeros((1,)))
    w = mx.zeros((2, 3, 3, 3, 4))
    conv.conv3d(mx.zeros((1, 4, 66, 98, 4)), w, min_channels=0)  # 66 x 98 padded / 64 x 96 out: 5% more rows
    conv.conv3d(mx.zeros((1, 4, 10, 14, 4)), w, min_channels=0)  # an 8 x 12 latent: 46% more
    conv.conv3d(mx.zeros((1, 5, 66, 98, 4)), w, stride=(2, 2, 2), min_channels=0)
    assert taken == [(1, 4, 66, 98, 4)]


@pytest.mark.parametrize("t", [conv.TAPS_MIN_ROWS + 70, 90])  # one product per tap / over the unfolded input
def test_conv1d_both_formulations(t):
    x, w = mx.random.normal((1, t, 6), key=mx.random.key(16)), mx.random.normal((5, 11, 6), key=mx.random.key(17))
    assert _rel(conv.conv1d(x, w, 5), mx.conv1d(x, w, dilation=5)) < 1e-6
