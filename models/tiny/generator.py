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

from .. import layouts
from ..text import gemma
from . import configs
from .configs import LTX2, TINY_VERSION, TinyVariant
from .tokenizer import build_tokenizer, special_tokens_map, tokenizer_config
from .weights import init_tensor, write_safetensors

TAG = LTX2.tag  # part of every tensor's seed
LORA_B_SCALE = 0.1  # keeps B @ A a perturbation of the weight it adapts


def _fill(shapes: dict[str, tuple[int, ...]], tag: str = TAG, **kw) -> dict:
    return {k: init_tensor(tag, k, s, **kw) for k, s in shapes.items()}


# --------------------------------------------------------------------------------------------- layouts
def checkpoint_layout(variant: TinyVariant = LTX2) -> dict[str, tuple[int, ...]]:
    """Every tensor of the single-file checkpoint: official key -> PyTorch shape."""
    return layouts.checkpoint_layout(variant.checkpoint_config(), configs.GEMMA_HIDDEN, configs.GEMMA_LAYERS)


def upsampler_layout(config: dict = configs.SPATIAL_UPSAMPLER) -> dict[str, tuple[int, ...]]:
    return layouts.upsampler_layout(config)


def lora_layout(checkpoint: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    return layouts.lora_layout(checkpoint, configs.TRANSFORMER["num_layers"], configs.LORA_RANK)


def gemma_layout(config: dict) -> dict[str, tuple[int, ...]]:
    return layouts.shapes(gemma.to_checkpoint(gemma.GemmaEncoder(gemma.GemmaConfig.from_config(config))))


# --------------------------------------------------------------------------------------------- writing
def write_checkpoint(path: Path, variant: TinyVariant = LTX2) -> dict[str, tuple[int, ...]]:
    layout = checkpoint_layout(variant)
    meta = {"config": json.dumps(variant.checkpoint_config()), "model_version": variant.model_version,
            "ltx2_tiny_version": TINY_VERSION}
    write_safetensors(path, _fill(layout, variant.tag), meta)
    return layout


def write_upsampler(path: Path, config: dict = configs.SPATIAL_UPSAMPLER, tag: str = TAG,
                    model_version: str | None = None) -> None:
    meta = {"config": json.dumps(config), "ltx2_tiny_version": TINY_VERSION}
    if model_version is not None:
        meta["model_version"] = model_version
    write_safetensors(path, _fill(upsampler_layout(config), tag), meta)


def write_lora(path: Path, checkpoint: dict[str, tuple[int, ...]], variant: TinyVariant = LTX2) -> None:
    tensors = _fill(lora_layout(checkpoint), variant.tag)
    for k in tensors:
        if k.endswith(".lora_B.weight"):
            tensors[k] = tensors[k] * LORA_B_SCALE
    meta = {"format": "pt", "ltx2_tiny_version": TINY_VERSION, "rank": str(configs.LORA_RANK)}
    if variant is not LTX2:  # says which model it adapts (the 2.0 file predates this and stays byte-identical)
        meta["model_version"] = variant.model_version
    write_safetensors(path, tensors, meta)


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


def generate(root: Path, files: dict[str, str], variant: TinyVariant = LTX2) -> None:
    """Write every tiny file of ``variant`` into ``root`` (an empty folder); ``files`` is role -> name
    (spec.layout.TINY_MODELS)."""
    layout = write_checkpoint(root / files["checkpoint"], variant)
    tagged = None if variant is LTX2 else variant.model_version
    write_upsampler(root / files["spatial_upsampler"], variant.spatial_upsampler, variant.tag, tagged)
    # its own seed tag: the two upsamplers share key names, and must not share values
    write_upsampler(root / files["temporal_upsampler"], variant.temporal_upsampler,
                    f"{variant.tag}/temporal-upsampler", tagged)
    write_lora(root / files["distilled_lora"], layout, variant)
    write_gemma(root / files["gemma"])  # the same Gemma-3 for both versions
