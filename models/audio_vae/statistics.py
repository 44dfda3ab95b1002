"""Per-channel latent statistics and the audio latent patchify they are applied through.

The statistics are stored per *patchified* channel: the latent (B, z, T, F) is flattened to
(B, T, z*F), channel-major, and each of the z*F numbers has its own mean and std.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn


def patchify(latent_btfz: mx.array) -> mx.array:
    """(B, T, F, z) channels-last latent -> (B, T, z*F) tokens, z-major like the official patchifier."""
    b, t, f, z = latent_btfz.shape
    return latent_btfz.transpose(0, 1, 3, 2).reshape(b, t, z * f)


def unpatchify(tokens: mx.array, z: int, f: int) -> mx.array:
    b, t, _ = tokens.shape
    return tokens.reshape(b, t, z, f).transpose(0, 1, 3, 2)


class PerChannelStatistics(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.std_of_means = mx.ones((channels,))
        self.mean_of_means = mx.zeros((channels,))

    def _check(self, tokens: mx.array) -> None:
        n = self.std_of_means.shape[0]
        if tokens.shape[-1] != n:
            raise ValueError(f"audio latent has {tokens.shape[-1]} numbers per frame (channels x mel bins) but the "
                             f"checkpoint's per-channel statistics have {n}: ddconfig ch must equal "
                             "z_channels * latent mel bins")

    def normalize(self, latent_btfz: mx.array) -> mx.array:
        _, _, f, z = latent_btfz.shape
        tokens = patchify(latent_btfz)
        self._check(tokens)
        return unpatchify((tokens - self.mean_of_means) / self.std_of_means, z, f)

    def un_normalize(self, latent_btfz: mx.array) -> mx.array:
        _, _, f, z = latent_btfz.shape
        tokens = patchify(latent_btfz)
        self._check(tokens)
        return unpatchify(tokens * self.std_of_means + self.mean_of_means, z, f)
