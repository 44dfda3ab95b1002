"""Loading the audio VAE encoder / decoder from a weight source.

Checkpoint keys: ``audio_vae.encoder.*``, ``audio_vae.decoder.*`` and the shared
``audio_vae.per_channel_statistics.{std-of-means,mean-of-means}``. Each loader reads only its own
half plus the statistics, and loads strictly.
"""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten

from ltx2.spec.layout import AUDIO_DECODER, AUDIO_ENCODER, AUDIO_STATISTICS

from ..weights.halves import merge_halves
from ..weights.keymap import CONV, KeyMap, LayoutRule, Rename, Root
from ..weights.source import WeightSource, open_source
from .config import AudioVAEConfig
from .decoder import AudioDecoder
from .encoder import AudioEncoder

STATS_PREFIX = AUDIO_STATISTICS
HALF_PREFIXES = {"encoder": AUDIO_ENCODER, "decoder": AUDIO_DECODER}


def _keymap(half: str) -> KeyMap:
    """``audio_vae.<half>.*`` and the statistics -> AudioEncoder / AudioDecoder names: the statistics' hyphenated
    names become attribute names, and every 4-D tensor is a Conv2d weight (the attention 1x1 projections too),
    PyTorch (out, in, kh, kw) -> MLX (out, kh, kw, in)."""
    return KeyMap(network=f"audio_vae.{half}",
                  roots=(Root(HALF_PREFIXES[half], ""), Root(STATS_PREFIX, "per_channel_statistics.")),
                  renames=(Rename("std-of-means", "std_of_means"), Rename("mean-of-means", "mean_of_means")),
                  layouts=(LayoutRule(CONV, ndims=(4,)),), parts=(f"audio_{half}",),
                  describe="an LTX-2 checkpoint with an audio VAE")


AUDIO_ENCODER_KEYMAP = _keymap("encoder")
AUDIO_DECODER_KEYMAP = _keymap("decoder")


def to_checkpoint(encoder: AudioEncoder | None = None, decoder: AudioDecoder | None = None) -> dict[str, mx.array]:
    """The given halves under their official keys (``audio_vae.{encoder,decoder}.*``) plus the shared
    ``audio_vae.per_channel_statistics.*`` (both halves hold a copy; given both, they must agree)."""
    return merge_halves(*(km.to_checkpoint(dict(tree_flatten(m.parameters())))
                          for km, m in ((AUDIO_ENCODER_KEYMAP, encoder), (AUDIO_DECODER_KEYMAP, decoder))
                          if m is not None))


def _load(path: WeightSource | str | Path, keymap: KeyMap, network: type, dtype: mx.Dtype | None):
    source = open_source(path, keymap)
    cfg = AudioVAEConfig.from_config(source.config())
    source.require_tensors()
    model = source.load_into(network(cfg), keymap.network, dtype)
    model.eval()
    return model


def load_audio_encoder(path: WeightSource | str | Path, dtype: mx.Dtype | None = mx.float32) -> AudioEncoder:
    return _load(path, AUDIO_ENCODER_KEYMAP, AudioEncoder, dtype)


def load_audio_decoder(path: WeightSource | str | Path, dtype: mx.Dtype | None = mx.float32) -> AudioDecoder:
    return _load(path, AUDIO_DECODER_KEYMAP, AudioDecoder, dtype)
