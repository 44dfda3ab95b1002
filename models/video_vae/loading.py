"""Loading the video VAE from a weight source: only ``vae.encoder.*`` / ``vae.decoder.*`` and the two shared
latent statistics are read, and every tensor must match the model built from the config."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten

from ltx2.models.weights import CheckpointError
from ltx2.models.weights.halves import merge_halves
from ltx2.models.weights.keymap import CONV, KeyMap, LayoutRule, Root
from ltx2.models.weights.source import WeightSource, open_source
from ltx2.spec.layout import VIDEO_DECODER, VIDEO_ENCODER, VIDEO_STATISTICS

from .config import VideoVAEConfig
from .decoder import VideoDecoder
from .encoder import VideoEncoder

# Real checkpoints may carry more statistics under vae.per_channel_statistics.*; the VAE uses these two.
STATS_KEYS = (VIDEO_STATISTICS + "std-of-means", VIDEO_STATISTICS + "mean-of-means")
STATS_NAMES = ("per_channel_statistics.std_of_means", "per_channel_statistics.mean_of_means")
HALF_PREFIXES = {"encoder": VIDEO_ENCODER, "decoder": VIDEO_DECODER}


def _keymap(half: str) -> KeyMap:
    """``vae.<half>.*`` and the two statistics -> VideoEncoder / VideoDecoder names. The modules mirror the
    official names, so only the statistics' hyphens change, and every convolution weight, (O, I, kt, kh, kw)
    in PyTorch, moves to MLX's (O, kt, kh, kw, I)."""
    return KeyMap(network=f"video VAE {half}",
                  roots=(Root(HALF_PREFIXES[half], ""),) + tuple(Root(k, n, exact=True) for k, n in zip(STATS_KEYS,
                                                                                                        STATS_NAMES)),
                  layouts=(LayoutRule(CONV, ndims=(5,)),), parts=(f"video_{half}",),
                  describe="an LTX-2 checkpoint with a video VAE")


VIDEO_ENCODER_KEYMAP = _keymap("encoder")
VIDEO_DECODER_KEYMAP = _keymap("decoder")


def to_checkpoint(encoder: VideoEncoder | None = None, decoder: VideoDecoder | None = None) -> dict[str, mx.array]:
    """The given halves under their official keys (``vae.{encoder,decoder}.*``) plus the shared
    ``vae.per_channel_statistics.*`` (both halves hold a copy; given both, they must agree)."""
    return merge_halves(*(km.to_checkpoint(dict(tree_flatten(m.parameters())))
                          for km, m in ((VIDEO_ENCODER_KEYMAP, encoder), (VIDEO_DECODER_KEYMAP, decoder))
                          if m is not None))


def vae_config(source: WeightSource) -> VideoVAEConfig:
    """The VAE config of the source's checkpoint config (its ``vae`` section)."""
    section = source.config().get("vae")
    if section is None:
        raise CheckpointError(f"{source.path}: the config metadata has no 'vae' section; is this an LTX-2 checkpoint?")
    return VideoVAEConfig.from_config(section)


def _load(path: WeightSource | str | Path, keymap: KeyMap, network: type, dtype: mx.Dtype | None):
    source = open_source(path, keymap)
    cfg = vae_config(source)
    source.require_tensors()
    missing = source.missing(STATS_NAMES)
    if missing:
        raise CheckpointError(f"{source.path}: missing the latent statistics {missing}")
    model = source.load_into(network(cfg), keymap.network, dtype)
    model.eval()
    return model


def load_video_encoder(path: WeightSource | str | Path, dtype: mx.Dtype | None = mx.float32) -> VideoEncoder:
    return _load(path, VIDEO_ENCODER_KEYMAP, VideoEncoder, dtype)


def load_video_decoder(path: WeightSource | str | Path, dtype: mx.Dtype | None = mx.float32) -> VideoDecoder:
    return _load(path, VIDEO_DECODER_KEYMAP, VideoDecoder, dtype)
