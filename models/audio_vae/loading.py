"""Loading the audio VAE encoder / decoder from the official single-file checkpoint.

Checkpoint keys: ``audio_vae.encoder.*``, ``audio_vae.decoder.*`` and the shared
``audio_vae.per_channel_statistics.{std-of-means,mean-of-means}``. Each loader reads only its own
half plus the statistics, and loads strictly.
"""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx

from ..weights import conv_weight_to_mlx, load_strict, load_tensors, read_header
from ..weights.halves import halves_to_checkpoint
from ..weights.converted import is_converted, load_converted
from ..weights.safetensors_file import CheckpointError
from .config import AudioVAEConfig
from .decoder import AudioDecoder
from .encoder import AudioEncoder

STATS_PREFIX = "audio_vae.per_channel_statistics."
_STATS_NAMES = {"std-of-means": "std_of_means", "mean-of-means": "mean_of_means"}


def sanitize(weights: dict[str, mx.array]) -> dict[str, mx.array]:
    """Checkpoint names (prefix already removed) -> module names.

    - every 4-D tensor is a Conv2d weight (incl. the attention 1x1 projections): PyTorch
      (out, in, kh, kw) -> MLX (out, kh, kw, in);
    - statistics buffers: hyphenated names -> attribute names.
    """
    out = {}
    for k, v in weights.items():
        if k.startswith("per_channel_statistics."):
            name = k.split(".", 1)[1]
            k = "per_channel_statistics." + _STATS_NAMES.get(name, name)
        elif v.ndim == 4:
            v = conv_weight_to_mlx(v)
        out[k] = v
    return out


_STATS_KEYS = {v: k for k, v in _STATS_NAMES.items()}


def unsanitize(weights: dict[str, mx.array]) -> dict[str, mx.array]:
    """Module names -> checkpoint names (prefix not added): the inverse of :func:`sanitize`
    (Conv2d weights back to PyTorch's (out, in, kh, kw), statistics back to their hyphenated names)."""
    out = {}
    for k, v in weights.items():
        if k.startswith("per_channel_statistics."):
            name = k.split(".", 1)[1]
            k = "per_channel_statistics." + _STATS_KEYS.get(name, name)
        elif v.ndim == 4:
            v = mx.moveaxis(v, -1, 1)
        out[k] = v
    return out


def to_checkpoint(encoder: AudioEncoder | None = None, decoder: AudioDecoder | None = None) -> dict[str, mx.array]:
    """The given halves under their official keys (``audio_vae.{encoder,decoder}.*``) plus the shared
    ``audio_vae.per_channel_statistics.*`` (both halves hold a copy; given both, they must agree)."""
    return halves_to_checkpoint("audio_vae.", unsanitize, encoder=encoder, decoder=decoder)


def _read(path: str | Path, part: str, dtype: mx.Dtype) -> tuple[dict[str, mx.array], AudioVAEConfig]:
    header = read_header(path)
    cfg = AudioVAEConfig.from_config(header.config())
    prefix = f"audio_vae.{part}."
    keys = header.keys_with_prefix(prefix)
    if not keys:
        raise CheckpointError(f"{header.path}: no tensors under {prefix!r}; "
                              "is this an LTX-2 checkpoint with an audio VAE?")
    stats = header.keys_with_prefix(STATS_PREFIX)
    raw = load_tensors(header, keys + stats, dtype)
    weights = {(k[len(prefix):] if k.startswith(prefix) else "per_channel_statistics." + k[len(STATS_PREFIX):]): v
               for k, v in raw.items()}
    return sanitize(weights), cfg


def load_audio_encoder(path: str | Path, dtype: mx.Dtype = mx.float32) -> AudioEncoder:
    weights, cfg = _read(path, "encoder", dtype)
    model = AudioEncoder(cfg)
    load_strict(model, weights, "audio_vae.encoder")
    model.eval()
    return model


def load_audio_decoder(path: str | Path, dtype: mx.Dtype = mx.float32) -> AudioDecoder:
    if is_converted(path):  # written by `ltx2 convert`
        return load_converted(path, "audio_decoder", dtype=dtype)
    weights, cfg = _read(path, "decoder", dtype)
    model = AudioDecoder(cfg)
    load_strict(model, weights, "audio_vae.decoder")
    model.eval()
    return model
