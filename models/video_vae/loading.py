"""Loading the video VAE from an LTX-2 checkpoint: only ``vae.encoder.*`` / ``vae.decoder.*`` and the two
shared latent statistics are read, and every tensor must match the model built from the config."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx

from ltx2.models.weights import CheckpointError, conv_weight_to_mlx, load_strict, load_tensors, read_header
from ltx2.models.weights.converted import is_converted, load_converted
from ltx2.models.weights.halves import halves_to_checkpoint

from .config import VideoVAEConfig
from .decoder import VideoDecoder
from .encoder import VideoEncoder

# Real checkpoints may carry more statistics under vae.per_channel_statistics.*; the VAE uses these two.
STATS_KEYS = ("vae.per_channel_statistics.std-of-means", "vae.per_channel_statistics.mean-of-means")


def sanitize(weights: dict[str, mx.array]) -> dict[str, mx.array]:
    """Checkpoint names (part prefix stripped, statistics as ``per_channel_statistics.*``) -> module names.

    The modules mirror the official names, so only two things change: the statistics' hyphens, and
    every convolution weight, (O, I, kt, kh, kw) in PyTorch, moves to MLX's (O, kt, kh, kw, I).
    """
    out = {}
    for k, v in weights.items():
        k = k.replace("std-of-means", "std_of_means").replace("mean-of-means", "mean_of_means")
        out[k] = conv_weight_to_mlx(v) if v.ndim == 5 else v
    return out


def unsanitize(weights: dict[str, mx.array]) -> dict[str, mx.array]:
    """Module names -> checkpoint names (part prefix not added): the inverse of :func:`sanitize`
    (statistics back to their hyphenated names, convolutions back to PyTorch's (O, I, kt, kh, kw))."""
    out = {}
    for k, v in weights.items():
        k = k.replace("std_of_means", "std-of-means").replace("mean_of_means", "mean-of-means")
        out[k] = mx.moveaxis(v, -1, 1) if v.ndim == 5 else v
    return out


def to_checkpoint(encoder: VideoEncoder | None = None, decoder: VideoDecoder | None = None) -> dict[str, mx.array]:
    """The given halves under their official keys (``vae.{encoder,decoder}.*``) plus the shared
    ``vae.per_channel_statistics.*`` (both halves hold a copy; given both, they must agree)."""
    return halves_to_checkpoint("vae.", unsanitize, encoder=encoder, decoder=decoder)


def read_vae_weights(path: str | Path, part: str, dtype: mx.Dtype) -> tuple[dict[str, mx.array], VideoVAEConfig]:
    """``vae.<part>.*`` plus the latent statistics, nothing else, keyed relative to the part."""
    header = read_header(path)
    section = header.config().get("vae")
    if section is None:
        raise CheckpointError(f"{header.path}: the config metadata has no 'vae' section; is this an LTX-2 checkpoint?")
    cfg = VideoVAEConfig.from_config(section)
    prefix = f"vae.{part}."
    keys = header.keys_with_prefix(prefix)
    if not keys:
        raise CheckpointError(f"{header.path}: no tensors under {prefix!r}; "
                              "is this an LTX-2 checkpoint with a video VAE?")
    missing = [k for k in STATS_KEYS if k not in header.tensors]
    if missing:
        raise CheckpointError(f"{header.path}: missing the latent statistics {missing}")
    raw = load_tensors(header, keys + list(STATS_KEYS), dtype)
    weights = {(k[len(prefix):] if k.startswith(prefix) else k[len("vae."):]): v for k, v in raw.items()}
    return weights, cfg


def load_video_encoder(path: str | Path, dtype: mx.Dtype = mx.float32) -> VideoEncoder:
    if is_converted(path):  # written by `ltx2 convert`
        return load_converted(path, "video_encoder", dtype=dtype)
    weights, cfg = read_vae_weights(path, "encoder", dtype)
    model = VideoEncoder(cfg)
    load_strict(model, sanitize(weights), "video VAE encoder")
    model.eval()
    return model


def load_video_decoder(path: str | Path, dtype: mx.Dtype = mx.float32) -> VideoDecoder:
    if is_converted(path):  # written by `ltx2 convert`
        return load_converted(path, "video_decoder", dtype=dtype)
    weights, cfg = read_vae_weights(path, "decoder", dtype)
    model = VideoDecoder(cfg)
    load_strict(model, sanitize(weights), "video VAE decoder")
    model.eval()
    return model
