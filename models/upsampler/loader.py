"""Loading an official latent upsampler file (its own safetensors file, keys without prefix)."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten

from ltx2.models.weights import CheckpointError, conv_weight_to_mlx, load_strict, load_tensors, read_header
from ltx2.models.weights.converted import is_converted, load_converted

from .config import UpsamplerConfig
from .model import LatentUpsampler


def sanitize(weights: dict[str, mx.array]) -> dict[str, mx.array]:
    """Checkpoint keys/layouts -> module parameters.

    - ``upsampler.0.*`` (conv inside the reference's Sequential) -> ``upsampler.layers.0.*``
    - conv weights (out, in, *k) -> MLX (out, *k, in); the blur kernel (1, 1, 5, 5) stays as stored
    """
    out = {}
    for k, v in weights.items():
        if k.startswith("upsampler.0."):
            k = "upsampler.layers.0." + k[len("upsampler.0."):]
        if k.endswith(".weight") and v.ndim in (4, 5):
            v = conv_weight_to_mlx(v)
        out[k] = v
    return out


def unsanitize(weights: dict[str, mx.array]) -> dict[str, mx.array]:
    """Module parameters -> file keys and PyTorch layouts: the inverse of :func:`sanitize`."""
    out = {}
    for k, v in weights.items():
        if k.startswith("upsampler.layers.0."):
            k = "upsampler.0." + k[len("upsampler.layers.0."):]
        if k.endswith(".weight") and v.ndim in (4, 5):
            v = mx.moveaxis(v, -1, 1)  # MLX (out, *k, in) -> PyTorch (out, in, *k)
        out[k] = v
    return out


def to_checkpoint(model: LatentUpsampler) -> dict[str, mx.array]:
    """The upsampler's tensors under the official upsampler file's (un-prefixed) keys."""
    return unsanitize(dict(tree_flatten(model.parameters())))


def load_upsampler(path: str | Path, dtype: mx.Dtype = mx.float32) -> LatentUpsampler:
    """Build the upsampler from the file's config metadata and load every tensor strictly."""
    if is_converted(path):  # written by `ltx2 convert`
        return load_converted(path, "upsampler", dtype=dtype)
    header = read_header(path)
    raw_cfg = header.config()
    if any(k in raw_cfg for k in ("transformer", "vae", "audio_vae", "vocoder")):
        raise CheckpointError(f"{header.path}: this is a main LTX-2 checkpoint, not a latent upsampler file "
                              "(pass the spatial/temporal upscaler .safetensors)")
    cfg = UpsamplerConfig.from_config(raw_cfg)
    model = LatentUpsampler(cfg)
    keys = list(header.tensors)
    if not keys:
        raise CheckpointError(f"{header.path}: no tensors")
    weights = sanitize(load_tensors(header, keys, dtype))
    load_strict(model, weights, f"latent upsampler ({header.path.name})")
    mx.eval(model.parameters())
    return model
