"""Writing the tiny model's files, deterministically, in the official layouts.

The key names and PyTorch layouts come from the networks themselves: each is built from its tiny
config and passed through its loader's inverse key map (``to_checkpoint``), so the files hold
exactly what the real loaders expect of an official file. The values are then drawn per key
(``weights.init_tensor``); the modules' own random initialisation is never evaluated.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import mlx.core as mx

from . import configs
from .configs import MODEL_VERSION, TINY_VERSION
from .tokenizer import build_tokenizer, special_tokens_map, tokenizer_config
from .weights import init_tensor, write_safetensors

TAG = f"ltx2-tiny/{TINY_VERSION}"  # part of every tensor's seed
LORA_TARGETS = ("attn1", "attn2", "audio_attn1", "audio_attn2", "audio_to_video_attn", "video_to_audio_attn")
LORA_FF = ("ff.net.0.proj", "ff.net.2", "audio_ff.net.0.proj", "audio_ff.net.2")
LORA_B_SCALE = 0.1  # keeps B @ A a perturbation of the weight it adapts


def _shapes(arrays: dict[str, mx.array]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in arrays.items()}


def _fill(shapes: dict[str, tuple[int, ...]], **kw) -> dict:
    return {k: init_tensor(TAG, k, s, **kw) for k, s in shapes.items()}


# --------------------------------------------------------------------------------------------- layouts
def checkpoint_layout() -> dict[str, tuple[int, ...]]:
    """Every tensor of the single-file checkpoint: official key -> PyTorch shape."""
    from ..audio_vae import AudioDecoder, AudioEncoder, AudioVAEConfig
    from ..audio_vae import loading as audio_loading
    from ..text import embeddings as text_embeddings
    from ..text.connector import ConnectorConfig
    from ..transformer import LTX2Transformer, TransformerConfig
    from ..transformer import loader as transformer_loader
    from ..video_vae import VideoDecoder, VideoEncoder, VideoVAEConfig
    from ..video_vae import loading as vae_loading
    from ..vocoder import Vocoder, VocoderConfig
    from ..vocoder import loading as vocoder_loading

    cfg = configs.checkpoint_config()
    tcfg = cfg["transformer"]
    layout: dict[str, tuple[int, ...]] = {}
    layout.update(_shapes(transformer_loader.to_checkpoint(LTX2Transformer(TransformerConfig.from_config(cfg)))))
    regs = tcfg["connector_num_learnable_registers"]
    processor = text_embeddings.EmbeddingsProcessor(
        configs.GEMMA_HIDDEN, configs.GEMMA_LAYERS + 1, ConnectorConfig.from_config(tcfg, "video", regs),
        ConnectorConfig.from_config(tcfg, "audio", regs))
    layout.update(_shapes(text_embeddings.to_checkpoint(processor)))
    vae = VideoVAEConfig.from_config(cfg)
    layout.update(_shapes(vae_loading.to_checkpoint(encoder=VideoEncoder(vae), decoder=VideoDecoder(vae))))
    audio = AudioVAEConfig.from_config(cfg)
    layout.update(_shapes(audio_loading.to_checkpoint(encoder=AudioEncoder(audio), decoder=AudioDecoder(audio))))
    layout.update(_shapes(vocoder_loading.to_checkpoint(Vocoder(VocoderConfig.from_config(cfg)))))
    return layout


def upsampler_layout() -> dict[str, tuple[int, ...]]:
    from ..upsampler import LatentUpsampler, UpsamplerConfig
    from ..upsampler import loader as upsampler_loader

    return _shapes(upsampler_loader.to_checkpoint(LatentUpsampler(UpsamplerConfig.from_config(
        configs.SPATIAL_UPSAMPLER))))


def lora_layout(checkpoint: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """lora_A (rank, in) / lora_B (out, rank) for every attention projection and feed-forward Linear
    of every transformer block, under the official LoRA key names."""
    out: dict[str, tuple[int, ...]] = {}
    prefix = "model.diffusion_model."
    for i in range(configs.TRANSFORMER["num_layers"]):
        paths = [f"transformer_blocks.{i}.{a}.{p}" for a in LORA_TARGETS for p in ("to_q", "to_k", "to_v", "to_out.0")]
        paths += [f"transformer_blocks.{i}.{p}" for p in LORA_FF]
        for path in paths:
            o, n = checkpoint[f"{prefix}{path}.weight"]
            out[f"diffusion_model.{path}.lora_A.weight"] = (configs.LORA_RANK, n)
            out[f"diffusion_model.{path}.lora_B.weight"] = (o, configs.LORA_RANK)
    return out


def gemma_layout(config: dict) -> dict[str, tuple[int, ...]]:
    from ..text import gemma

    return _shapes(gemma.to_checkpoint(gemma.GemmaEncoder(gemma.GemmaConfig.from_config(config))))


# --------------------------------------------------------------------------------------------- writing
def write_checkpoint(path: Path) -> dict[str, tuple[int, ...]]:
    layout = checkpoint_layout()
    meta = {"config": json.dumps(configs.checkpoint_config()), "model_version": MODEL_VERSION,
            "ltx2_tiny_version": TINY_VERSION}
    write_safetensors(path, _fill(layout), meta)
    return layout


def write_upsampler(path: Path) -> None:
    meta = {"config": json.dumps(configs.SPATIAL_UPSAMPLER), "ltx2_tiny_version": TINY_VERSION}
    write_safetensors(path, _fill(upsampler_layout()), meta)


def write_lora(path: Path, checkpoint: dict[str, tuple[int, ...]]) -> None:
    tensors = _fill(lora_layout(checkpoint))
    for k in tensors:
        if k.endswith(".lora_B.weight"):
            tensors[k] = tensors[k] * LORA_B_SCALE
    write_safetensors(path, tensors, {"format": "pt", "ltx2_tiny_version": TINY_VERSION,
                                      "rank": str(configs.LORA_RANK)})


def write_gemma(folder: Path) -> None:
    """config.json, two weight shards with their index (as the real multi-shard release), tokenizer."""
    folder.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer()
    special = {t: tok.token_to_id(t) for t in ("<eos>", "<end_of_turn>", "<start_of_image>", "<end_of_image>",
                                               "<image_soft_token>")}
    config = configs.gemma_config(tok.get_vocab_size(), special)
    tensors = _fill(gemma_layout(config), norm_offset=0.0)  # Gemma's RMSNorm scales by (1 + w)
    first = ("language_model.model.embed_tokens.", "language_model.model.layers.0.")
    shards = [{k: v for k, v in tensors.items() if k.startswith(first)},
              {k: v for k, v in tensors.items() if not k.startswith(first)}]
    weight_map, total = {}, 0
    for i, shard in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        write_safetensors(folder / name, shard, {"format": "pt"})
        for k, v in shard.items():
            weight_map[k] = name
            total += 2 * math.prod(v.shape)  # stored as bf16
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (folder / "tokenizer.json").write_text(tok.to_str(pretty=True))
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(), indent=2) + "\n")
    (folder / "special_tokens_map.json").write_text(json.dumps(special_tokens_map(), indent=2) + "\n")


def generate(root: Path, files: dict[str, str]) -> None:
    """Write every tiny file into ``root`` (an empty folder); ``files`` is role -> name (TINY_FILES)."""
    layout = write_checkpoint(root / files["checkpoint"])
    write_upsampler(root / files["spatial_upsampler"])
    write_lora(root / files["distilled_lora"], layout)
    write_gemma(root / files["gemma"])
