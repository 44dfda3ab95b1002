"""What the official files hold, derived from our own networks: official key -> PyTorch shape.

Each network is built from a config (lazily: nothing is evaluated) and passed through its loader's
inverse key map (``to_checkpoint``), so a layout is exactly what the real loaders expect. The tiny
model generator and the full-size header synthesiser both describe their files with these.
"""

from __future__ import annotations

import mlx.core as mx

from ltx2.spec.layout import TRANSFORMER

from .audio_vae import AudioDecoder, AudioEncoder, AudioVAEConfig
from .audio_vae import loading as audio_loading
from .text import embeddings as text_embeddings
from .text.connector import ConnectorConfig
from .transformer import LTX2Transformer, TransformerConfig
from .transformer import loader as transformer_loader
from .upsampler import LatentUpsampler, UpsamplerConfig
from .upsampler import loader as upsampler_loader
from .video_vae import VideoDecoder, VideoEncoder, VideoVAEConfig
from .video_vae import loading as vae_loading
from .vocoder import build_vocoder, vocoder_config
from .vocoder import loading as vocoder_loading


def shapes(arrays: dict[str, mx.array]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in arrays.items()}


def checkpoint_layout(cfg: dict, gemma_hidden: int, gemma_layers: int) -> dict[str, tuple[int, ...]]:
    """The single-file checkpoint for ``cfg`` ({"transformer", "vae", "audio_vae", "vocoder"}); the text
    projection is sized by the Gemma it reads (hidden width, layers + 1 hidden states)."""
    tcfg = cfg["transformer"]
    layout = shapes(transformer_loader.to_checkpoint(LTX2Transformer(TransformerConfig.from_config(cfg))))
    regs = tcfg["connector_num_learnable_registers"]
    processor = text_embeddings.EmbeddingsProcessor(
        gemma_hidden, gemma_layers + 1, ConnectorConfig.from_config(tcfg, "video", regs),
        ConnectorConfig.from_config(tcfg, "audio", regs), v2=text_embeddings.uses_v2(tcfg))
    layout.update(shapes(text_embeddings.to_checkpoint(processor)))
    vae = VideoVAEConfig.from_config(cfg)
    layout.update(shapes(vae_loading.to_checkpoint(encoder=VideoEncoder(vae), decoder=VideoDecoder(vae))))
    audio = AudioVAEConfig.from_config(cfg)
    layout.update(shapes(audio_loading.to_checkpoint(encoder=AudioEncoder(audio), decoder=AudioDecoder(audio))))
    layout.update(shapes(vocoder_loading.to_checkpoint(build_vocoder(vocoder_config(cfg)))))
    return layout


def upsampler_layout(cfg: dict) -> dict[str, tuple[int, ...]]:
    return shapes(upsampler_loader.to_checkpoint(LatentUpsampler(UpsamplerConfig.from_config(cfg))))


LORA_ATTENTIONS = ("attn1", "attn2", "audio_attn1", "audio_attn2", "audio_to_video_attn", "video_to_audio_attn")
LORA_FF = ("ff.net.0.proj", "ff.net.2", "audio_ff.net.0.proj", "audio_ff.net.2")


def lora_layout(checkpoint: dict[str, tuple[int, ...]], num_layers: int, rank: int) -> dict[str, tuple[int, ...]]:
    """lora_A (rank, in) / lora_B (out, rank) for every attention projection and feed-forward Linear of
    every transformer block, under the official LoRA key names."""
    out: dict[str, tuple[int, ...]] = {}
    for i in range(num_layers):
        paths = [f"transformer_blocks.{i}.{a}.{p}" for a in LORA_ATTENTIONS for p in ("to_q", "to_k", "to_v", "to_out.0")]
        paths += [f"transformer_blocks.{i}.{p}" for p in LORA_FF]
        for path in paths:
            o, n = checkpoint[f"{TRANSFORMER}{path}.weight"]
            out[f"diffusion_model.{path}.lora_A.weight"] = (rank, n)
            out[f"diffusion_model.{path}.lora_B.weight"] = (o, rank)
    return out
