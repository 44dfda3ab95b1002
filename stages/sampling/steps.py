"""One sampler step: the Euler update and the blend that keeps conditioned tokens clean."""

from __future__ import annotations

import mlx.core as mx
import numpy as np


def velocity(x: mx.array, x0: mx.array, sigma: float) -> mx.array:
    """(x - x0) / sigma: the flow-matching velocity implied by a denoised prediction."""
    if float(sigma) == 0.0:
        raise ValueError("sigma is 0: there is no velocity at the end of the schedule")
    return (x.astype(mx.float32) - x0.astype(mx.float32)) / float(sigma)


def euler_step(x: mx.array, x0: mx.array, sigma: float, sigma_next: float) -> mx.array:
    """x + (x - x0)/sigma * (sigma_next - sigma), computed in float32 and returned in x's dtype.

    The step size is the float32 difference of the two sigmas, as the reference takes it from its
    float32 schedule.
    """
    dt = float(np.float32(sigma_next) - np.float32(sigma))
    return (x.astype(mx.float32) + velocity(x, x0, sigma) * dt).astype(x.dtype)


def blend_clean(x0: mx.array, denoise_mask: mx.array, clean: mx.array) -> mx.array:
    """x0 where tokens are denoised, the clean (conditioning) latent where the mask is 0."""
    m = denoise_mask.astype(mx.float32)
    return (x0 * m + clean.astype(mx.float32) * (1 - m)).astype(x0.dtype)
