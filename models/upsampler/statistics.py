"""The video VAE's per-channel latent statistics, and the upsample wrapper the pipeline calls.

Diffusion latents are normalised per channel, (z - mean) / std; the upsampler was trained on raw
VAE latents, so the wrapper un-normalises, upsamples, and normalises again. The statistics live in
the main checkpoint under ``vae.per_channel_statistics.{mean-of-means,std-of-means}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx

from ltx2.models.weights import CheckpointError, load_tensors, read_header
from ltx2.models.weights.converted import is_converted, open_converted

from .model import LatentUpsampler

STATS_PREFIX = "vae.per_channel_statistics."


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


def load_latent_statistics(path: str | Path, dtype: mx.Dtype = mx.float32) -> LatentStatistics:
    """Read only the two statistics vectors from the main LTX-2 checkpoint (or a converted video VAE file)."""
    if is_converted(path):  # `ltx2 convert` keeps them in the video decoder (and encoder) part
        f = open_converted(path)
        for part in ("video_decoder", "video_encoder"):
            if part in f.parts:
                t = f.tensors(part, "per_channel_statistics.", dtype)
                return LatentStatistics(mean=t["per_channel_statistics.mean_of_means"],
                                        std=t["per_channel_statistics.std_of_means"])
        raise CheckpointError(f"{path}: this converted file holds {sorted(f.parts)}; the latent statistics are in "
                              "the converted video decoder file (video_decoder.safetensors)")
    header = read_header(path)
    keys = [STATS_PREFIX + "mean-of-means", STATS_PREFIX + "std-of-means"]
    missing = [k for k in keys if k not in header.tensors]
    if missing:
        raise CheckpointError(f"{header.path}: missing {', '.join(missing)}; the latent statistics come from the "
                              "main LTX-2 checkpoint (the one holding vae.*), not from the upsampler file")
    t = load_tensors(header, keys, dtype)
    return LatentStatistics(mean=t[keys[0]], std=t[keys[1]])


def upsample_latent(latent: mx.array, upsampler: LatentUpsampler, stats: LatentStatistics) -> mx.array:
    """Upsample a normalised diffusion latent (B, C, F, H, W) -> normalised (B, C, F', H', W')."""
    raw = stats.un_normalize(latent.astype(mx.float32))
    up = upsampler(raw.transpose(0, 2, 3, 4, 1)).transpose(0, 4, 1, 2, 3)
    return stats.normalize(up)
