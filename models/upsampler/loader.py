"""Loading a latent upsampler from a weight source: an official upsampler file (its own safetensors file,
keys without prefix) or a converted one."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten

from ltx2.models.weights import CheckpointError
from ltx2.models.weights.keymap import CONV, KeyMap, LayoutRule, Rename, Root
from ltx2.models.weights.source import WeightSource, open_source

from .config import UpsamplerConfig
from .model import LatentUpsampler

# file key -> LatentUpsampler name: ``upsampler.0.*`` (the conv inside the reference's Sequential) ->
# ``upsampler.layers.0.*``; conv weights (out, in, *k) -> MLX (out, *k, in), the blur kernel (1, 1, 5, 5,
# not a ``.weight``) stays as stored
UPSAMPLER_KEYMAP = KeyMap(
    network="latent upsampler",
    roots=(Root("", ""),),
    renames=(Rename("^upsampler.0.", "^upsampler.layers.0."),),
    layouts=(LayoutRule(CONV, r"\.weight$", ndims=(4, 5)),),
    parts=("upsampler",),
    describe="a latent upsampler file",
)


def to_checkpoint(model: LatentUpsampler) -> dict[str, mx.array]:
    """The upsampler's tensors under the official upsampler file's (un-prefixed) keys."""
    return UPSAMPLER_KEYMAP.to_checkpoint(dict(tree_flatten(model.parameters())))


def upsampler_config(source: WeightSource) -> UpsamplerConfig:
    """The upsampler's config (a main LTX-2 checkpoint given by mistake is named as such)."""
    raw_cfg = source.config()
    if any(k in raw_cfg for k in ("transformer", "vae", "audio_vae", "vocoder")):
        raise CheckpointError(f"{source.path}: this is a main LTX-2 checkpoint, not a latent upsampler file "
                              "(pass the spatial/temporal upscaler .safetensors)")
    return UpsamplerConfig.from_config(raw_cfg)


def load_upsampler(path: WeightSource | str | Path, dtype: mx.Dtype | None = mx.float32) -> LatentUpsampler:
    """Build the upsampler from the file's config metadata and load every tensor strictly."""
    source = open_source(path, UPSAMPLER_KEYMAP)
    model = LatentUpsampler(upsampler_config(source))
    if not source.keys():
        raise CheckpointError(f"{source.path}: no tensors")
    source.load_into(model, f"latent upsampler ({source.path.name})", dtype)
    mx.eval(model.parameters())
    return model
