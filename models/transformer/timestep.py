"""Timestep conditioning: sinusoidal features -> MLP -> AdaLN-single modulation vectors."""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn
import numpy as np

SINUSOID_CHANNELS = 256


def _sinusoid_frequencies(channels: int = SINUSOID_CHANNELS, max_period: float = 10000.0) -> mx.array:
    # exp(-ln(max_period) * i / half), i < half: the exponent is rounded to float32 step by step as
    # the reference forms it, then exponentiated in float64 and rounded once (a constant table, the
    # same on every device). The reference's float32 exp is 1 ulp off in a few entries; that leaves
    # ~2e-6 relative difference in the timestep embedding, far inside the 1e-4 parity tolerance.
    half = channels // 2
    exponent = np.float32(-math.log(max_period)) * np.arange(half, dtype=np.float32) / np.float32(half)
    return mx.array(np.exp(exponent.astype(np.float64)).astype(np.float32))


class TimestepEmbedder(nn.Module):
    """Scalar timestep (already scaled, e.g. sigma * 1000) -> [cos, sin] features -> 2-layer SiLU MLP."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(SINUSOID_CHANNELS, dim)
        self.linear_2 = nn.Linear(dim, dim)
        self._freqs = _sinusoid_frequencies()  # leading underscore: a constant, not a parameter

    def __call__(self, t: mx.array) -> mx.array:
        angles = t.astype(mx.float32)[..., None] * self._freqs
        feats = mx.concatenate([mx.cos(angles), mx.sin(angles)], axis=-1)
        return self.linear_2(nn.silu(self.linear_1(feats.astype(self.linear_1.weight.dtype))))


class AdaLNSingle(nn.Module):
    """PixArt-style AdaLN-single: one timestep MLP shared by all blocks, emitting ``n_vectors`` x dim.

    Returns (modulation (..., n_vectors * dim), embedded timestep (..., dim)); the embedded
    timestep also drives the output-layer modulation.
    """

    def __init__(self, dim: int, n_vectors: int):
        super().__init__()
        self.timestep_embedder = TimestepEmbedder(dim)
        self.linear = nn.Linear(dim, n_vectors * dim)

    def __call__(self, t: mx.array) -> tuple[mx.array, mx.array]:
        emb = self.timestep_embedder(t)
        return self.linear(nn.silu(emb)), emb
