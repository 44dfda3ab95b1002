"""Seeded Gaussian noise and the noiser that mixes it into a latent.

Every noise tensor comes from its own MLX random key, derived from the job seed and a *stream path*
naming what the noise is for, e.g. ``noise_key(seed, "denoise", "video")`` or
``noise_key(seed, "refine", "audio")`` (add a step index for per-step noise). The derivation:

    key(seed, *path) = mx.random.key(u64), u64 = first 8 bytes (little endian) of
                       sha256(json.dumps(["ltx2-noise", seed, *path]))

It depends on nothing but the seed and the path: not on process, on which stage ran before, on
how many draws happened earlier, nor on a global RNG state, so a stage run in a fresh process, on
another machine or after a resume draws the same noise, and two streams never share draws.
The official pipelines draw from one sequential torch generator instead, so their noise cannot be
reproduced here; parity tests feed the reference's saved noise to ``noise_latent`` directly.
"""

from __future__ import annotations

import hashlib
import json

import mlx.core as mx


def noise_key(seed: int, *path: str | int) -> mx.array:
    """The MLX random key of the noise stream ``path`` under job seed ``seed``."""
    for part in path:
        if not isinstance(part, (str, int)) or isinstance(part, bool):
            raise TypeError(f"noise stream path parts must be str or int, got {part!r}")
    digest = hashlib.sha256(json.dumps(["ltx2-noise", int(seed), *path]).encode()).digest()
    return mx.random.key(int.from_bytes(digest[:8], "little"))


def gaussian_noise(key: mx.array, shape: tuple[int, ...], dtype: mx.Dtype = mx.float32) -> mx.array:
    """Standard normal noise of ``shape`` drawn from ``key`` (same key and shape: same values)."""
    return mx.random.normal(tuple(shape), dtype=dtype, key=key)


def noise_latent(latent: mx.array, noise: mx.array, denoise_mask: mx.array | float = 1.0,
                 noise_scale: float = 1.0) -> mx.array:
    """Move ``latent`` toward ``noise`` where it is to be denoised: noise*m + latent*(1-m), m = mask*scale.

    ``noise_scale`` 1 starts from pure noise (stage 1); the refine stage re-noises the upsampled
    latent to its first sigma (0.909375). A mask of 0 (conditioning tokens) keeps the latent as is.
    """
    m = denoise_mask * noise_scale
    if isinstance(m, mx.array):
        m = m.astype(mx.float32)
    return (noise * m + latent * (1 - m)).astype(latent.dtype)
