"""The VAE layout shared by the video and audio VAEs: an encoder and a decoder under one prefix, each
holding a copy of the latent statistics that the checkpoint stores once."""

from __future__ import annotations

import mlx.core as mx


def merge_halves(*halves: dict[str, mx.array]) -> dict[str, mx.array]:
    """The checkpoint tensors of each half (encoder, decoder) in one dict; the statistics both carry appear
    once, and must agree."""
    out: dict[str, mx.array] = {}
    for half in halves:
        for key, v in half.items():
            if key in out and not mx.array_equal(out[key], v).item():
                raise ValueError(f"{key}: the encoder and decoder hold different latent statistics")
            out[key] = v
    return out
