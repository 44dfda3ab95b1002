"""Loading the duration head from a file holding it under ``duration_head.`` (its own file or a 2.5 monolith)."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx

from ltx2.models.weights import CheckpointError
from ltx2.models.weights.keymap import KeyMap, Root
from ltx2.models.weights.source import WeightSource, open_source

from .model import DurationHead, DurationHeadConfig

# file key -> DurationHead name: the prefix goes, every name and layout is kept (the packed attention included)
DURATION_HEAD_KEYMAP = KeyMap(network="duration head", roots=(Root("duration_head.", ""),),
                              describe="an LTX-2.5 checkpoint with a duration head")


def load_duration_head(path: WeightSource | str | Path, dtype: mx.Dtype | None = mx.float32) -> DurationHead:
    """Build the head from the file's config metadata and load every tensor strictly."""
    source = open_source(path, DURATION_HEAD_KEYMAP)
    if not source.keys():
        raise CheckpointError(f"{source.path}: no duration head in it (LTX-2.5 files hold one under "
                              "'duration_head.'; earlier versions have none)")
    model = DurationHead(DurationHeadConfig.from_config(source.config()))
    source.load_into(model, f"duration head ({source.path.name})", dtype)
    mx.eval(model.parameters())
    return model
