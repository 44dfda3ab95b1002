"""The VAE layout shared by the video and audio VAEs: an encoder and a decoder under one prefix, each
holding a copy of the latent statistics that the checkpoint stores once."""

from __future__ import annotations

from collections.abc import Callable

import mlx.core as mx
from mlx.utils import tree_flatten

STATS = "per_channel_statistics."


def halves_to_checkpoint(prefix: str, unsanitize: Callable[[dict], dict], **halves) -> dict[str, mx.array]:
    """``halves`` (encoder=..., decoder=...; None skips one) under ``{prefix}{half}.*`` plus the statistics
    once under ``{prefix}per_channel_statistics.*``; given both halves, their statistics must agree."""
    out: dict[str, mx.array] = {}
    for part, model in halves.items():
        if model is None:
            continue
        for k, v in unsanitize(dict(tree_flatten(model.parameters()))).items():
            if k.startswith(STATS):
                key = prefix + k
                if key in out and not mx.array_equal(out[key], v).item():
                    raise ValueError(f"{key}: the encoder and decoder hold different latent statistics")
                out[key] = v
            else:
                out[f"{prefix}{part}.{k}"] = v
    return out
