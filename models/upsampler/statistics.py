"""The video VAE's per-channel latent statistics, and the upsample wrapper the pipeline calls.

Diffusion latents are normalised per channel, (z - mean) / std; the upsampler was trained on raw
VAE latents, so the wrapper un-normalises, upsamples, and normalises again. The statistics live in
the main checkpoint under ``vae.per_channel_statistics.{mean-of-means,std-of-means}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx

from ltx2.models.weights import CheckpointError
from ltx2.models.weights.keymap import KeyMap, Root
from ltx2.models.weights.source import WeightSource, open_source
from ltx2.spec.layout import VIDEO_STATISTICS

from .model import LatentUpsampler

STATS_PREFIX = VIDEO_STATISTICS


@dataclass(frozen=True)
class LatentStatistics:
    mean: mx.array  # (C,)
    std: mx.array  # (C,)

    def _check(self, latent: mx.array) -> None:
        c = self.mean.shape[0]
        if latent.ndim != 5 or latent.shape[1] != c:
            raise ValueError(f"expected a (B, {c}, F, H, W) video latent, got {tuple(latent.shape)}")

    def _bcast(self, v: mx.array) -> mx.array:
        return v.reshape(1, -1, 1, 1, 1)

    def normalize(self, latent: mx.array) -> mx.array:
        """Raw VAE latent (B, C, F, H, W) -> diffusion latent."""
        self._check(latent)
        return (latent - self._bcast(self.mean)) / self._bcast(self.std)

    def un_normalize(self, latent: mx.array) -> mx.array:
        """Diffusion latent (B, C, F, H, W) -> raw VAE latent."""
        self._check(latent)
        return latent * self._bcast(self.std) + self._bcast(self.mean)


# the two statistics vectors -> the video VAE's names for them (a converted video VAE file holds them so)
LATENT_STATISTICS_KEYMAP = KeyMap(
    network="latent statistics",
    roots=(Root(STATS_PREFIX + "mean-of-means", "per_channel_statistics.mean_of_means", exact=True),
           Root(STATS_PREFIX + "std-of-means", "per_channel_statistics.std_of_means", exact=True)),
    parts=("video_decoder", "video_encoder"),  # `ltx2 convert` keeps them in the video decoder (and encoder) part
)


def load_latent_statistics(path: WeightSource | str | Path, dtype: mx.Dtype | None = mx.float32) -> LatentStatistics:
    """Read only the two statistics vectors from the main LTX-2 checkpoint (or a converted video VAE file)."""
    source = open_source(path, LATENT_STATISTICS_KEYMAP)
    names = ("per_channel_statistics.mean_of_means", "per_channel_statistics.std_of_means")
    missing = source.missing(names)
    if missing:
        raise CheckpointError(f"{source.path}: missing {', '.join(missing)}; the latent statistics come from the "
                              "main LTX-2 checkpoint (the one holding vae.*), not from the upsampler file")
    t = source.read(names, dtype)
    return LatentStatistics(mean=t[names[0]], std=t[names[1]])


def upsample_latent(latent: mx.array, upsampler: LatentUpsampler, stats: LatentStatistics) -> mx.array:
    """Upsample a normalised diffusion latent (B, C, F, H, W) -> normalised (B, C, F', H', W')."""
    raw = stats.un_normalize(latent.astype(mx.float32))
    up = upsampler(raw.transpose(0, 2, 3, 4, 1)).transpose(0, 4, 1, 2, 3)
    return stats.normalize(up)
