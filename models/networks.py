"""The networks a weight file holds, each with its key map, how it is built and how it is loaded.

One table for the code that handles any network by name: ``ltx2 convert`` (plans a converted part from
the unloaded network, fills it from the loaded one) and :func:`load_converted` (a part of a converted
file, through the network's own loader). Keyed by the converted-file part names (weights/converted.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn

from .audio_vae import AUDIO_DECODER_KEYMAP, AudioDecoder, AudioVAEConfig, load_audio_decoder
from .text.embeddings import TEXT_EMBEDDINGS_KEYMAP, build_embeddings_processor, load_embeddings_processor
from .text.gemma import GEMMA_KEYMAP, GemmaConfig, GemmaEncoder, load_gemma
from .transformer.loader import TRANSFORMER_KEYMAP, build_transformer, load_transformer
from .upsampler import UPSAMPLER_KEYMAP, LatentUpsampler, load_upsampler
from .upsampler.loader import upsampler_config
from .video_vae import VIDEO_DECODER_KEYMAP, VIDEO_ENCODER_KEYMAP, VideoDecoder, VideoEncoder
from .video_vae.loading import load_video_decoder, load_video_encoder, vae_config
from .vocoder import VOCODER_KEYMAP, build_vocoder, load_vocoder, vocoder_config
from .weights.converted import open_converted
from .weights.keymap import KeyMap
from .weights.source import ConvertedSource, WeightSource


@dataclass(frozen=True)
class Network:
    keymap: KeyMap
    build: Callable[[WeightSource], nn.Module]  # the unloaded network the source's config (and shapes) describe
    load: Callable[..., nn.Module]  # (source, dtype) -> the loaded network


NETWORKS: dict[str, Network] = {
    "transformer": Network(TRANSFORMER_KEYMAP, build_transformer, load_transformer),
    "gemma": Network(GEMMA_KEYMAP, lambda s: GemmaEncoder(GemmaConfig.from_config(s.config())), load_gemma),
    "text_embeddings": Network(TEXT_EMBEDDINGS_KEYMAP, build_embeddings_processor, load_embeddings_processor),
    "video_decoder": Network(VIDEO_DECODER_KEYMAP, lambda s: VideoDecoder(vae_config(s)), load_video_decoder),
    "video_encoder": Network(VIDEO_ENCODER_KEYMAP, lambda s: VideoEncoder(vae_config(s)), load_video_encoder),
    "audio_decoder": Network(AUDIO_DECODER_KEYMAP, lambda s: AudioDecoder(AudioVAEConfig.from_config(s.config())),
                             load_audio_decoder),
    "vocoder": Network(VOCODER_KEYMAP, lambda s: build_vocoder(vocoder_config(s.config())), load_vocoder),
    "upsampler": Network(UPSAMPLER_KEYMAP, lambda s: LatentUpsampler(upsampler_config(s)), load_upsampler),
}


def load_converted(path: str | Path, part: str | None = None, *, dtype: mx.Dtype | None = mx.float32,
                   loras: list[tuple[str | Path, float]] = ()) -> nn.Module:
    """The network ``part`` of a converted file (None: its only part), loaded by the network's own loader
    (quantised where the file is). ``loras``: fused on load (transformer only; a LoRA recorded as fused at
    conversion with the same strength is not fused a second time)."""
    f = open_converted(path)
    info = f.part(part)
    net = NETWORKS[info.name]
    return net.load(ConvertedSource(f, net.keymap, loras), dtype)
