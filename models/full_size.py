"""The official LTX-2 (19B), LTX-2.3 (22B) and Gemma-3-12B file layouts at full size, as header-only files.

For planning tests and memory benchmarks at the real widths where the real weights (tens of GB)
cannot be downloaded: every network is built from its REAL config (lazily: MLX never evaluates the
random initialisation, so no memory is used) and passed through its loader's inverse key map, as
``models/tiny/generator.py`` does for the tiny model, giving every official key with its official
shape. ``write_header_only`` writes a safetensors file holding that header and a SPARSE body of the
right length (``os.truncate``: no disk is used; reading a tensor gives zeros). Such files are marked
``"ltx2_synthetic": "header-only"`` in their metadata: they are never weights.

The configs are the values the oracle confirmed (shared/oracle/README.md) and the real block
structures noted in the tiny configs (VAE res_x 4/6/6/2/2 encoder, 5-layer decoder stacks, audio VAE
ch 128, vocoder 1024, upsampler 1024 x 4 blocks), and for Gemma the public gemma-3-12b-it config.

LTX-2.3 (22B): the same transformer widths (48 blocks, video 32 x 128, audio 32 x 64) with gated attention and
cross-attention AdaLN (9 AdaLN rows, prompt AdaLN); the caption projection moves to the text side (V2 feature
extractor: Linear(3840 x 49 -> 4096) and (-> 2048) with biases) and the connectors become 8 gated layers at each
stream's width (video 32 x 128, audio 32 x 64, 128 registers): the ~3B more parameters are there. Not in the
oracle notes, so kept from LTX-2 here (assumptions; they weigh little in the plan): the video VAE's widths (the
2.0 decoder, which the 2.3 loader also reads), the BigVGAN + BWE vocoder at the 2.0 vocoder's 1024 width, the
upsamplers' 1024 x 4 blocks, the distilled LoRA's rank 384.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from . import layouts
from .text import gemma
from .tiny import configs as tiny
from .tiny import ensure_tiny_model

SYNTHETIC = {"ltx2_synthetic": "header-only"}

TRANSFORMER = dict(
    tiny.TRANSFORMER,
    num_layers=48, num_attention_heads=32, attention_head_dim=128, cross_attention_dim=4096,
    in_channels=128, out_channels=128,
    audio_num_attention_heads=32, audio_attention_head_dim=64, audio_cross_attention_dim=2048,
    audio_in_channels=128, audio_out_channels=128, caption_channels=3840,
    connector_num_attention_heads=30, connector_attention_head_dim=128, connector_num_layers=2,
    connector_num_learnable_registers=128,
)

_ENC_RES = (4, 6, 6, 2, 2)
VAE = dict(
    tiny.VAE, latent_channels=128, decoder_base_channels=128,
    encoder_blocks=[b if b[0] != "res_x" else ["res_x", {"num_layers": _ENC_RES[i // 2]}]
                    for i, b in enumerate(tiny.VAE["encoder_blocks"])],
    decoder_blocks=[b if b[0] != "res_x" else ["res_x", {"num_layers": 5, "inject_noise": False}]
                    for b in tiny.VAE["decoder_blocks"]],
)

AUDIO_VAE = json.loads(json.dumps(tiny.AUDIO_VAE))
AUDIO_VAE["model"]["params"]["ddconfig"].update(ch=128, z_channels=8)

VOCODER = dict(tiny.VOCODER, upsample_initial_channel=1024)

TRANSFORMER_LTX23 = {
    **TRANSFORMER,
    **{k: v for k, v in tiny.TRANSFORMER_LTX23.items() if k not in tiny.TRANSFORMER},  # the 2.3 switches
    **dict(connector_num_attention_heads=32, connector_attention_head_dim=128, connector_num_layers=8,
           audio_connector_num_attention_heads=32, audio_connector_attention_head_dim=64),
}
VOCODER_LTX23 = {name: dict(gen, upsample_initial_channel=1024) for name, gen in tiny.VOCODER_LTX23.items()}

SPATIAL_UPSAMPLER = dict(tiny.SPATIAL_UPSAMPLER, in_channels=128, mid_channels=1024, num_blocks_per_stage=4)
TEMPORAL_UPSAMPLER = dict(tiny.TEMPORAL_UPSAMPLER, in_channels=128, mid_channels=1024, num_blocks_per_stage=4)

LORA_RANK = 384  # ltx-2-19b-distilled-lora-384

GEMMA_TEXT = {
    "attention_bias": False, "attention_dropout": 0.0, "attn_logit_softcapping": None,
    "cache_implementation": "hybrid", "final_logit_softcapping": None, "head_dim": 256,
    "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 3840, "initializer_range": 0.02,
    "intermediate_size": 15360, "max_position_embeddings": 131072, "model_type": "gemma3_text",
    "num_attention_heads": 16, "num_hidden_layers": 48, "num_key_value_heads": 8, "query_pre_attn_scalar": 256,
    "rms_norm_eps": 1e-6, "rope_local_base_freq": 10000.0, "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
    "rope_theta": 1000000.0, "sliding_window": 1024, "sliding_window_pattern": 6, "torch_dtype": "bfloat16",
    "use_cache": True, "vocab_size": 262208,
}
GEMMA_VISION = {"hidden_size": 1152, "image_size": 896, "intermediate_size": 4304, "model_type": "siglip_vision_model",
                "num_attention_heads": 16, "num_hidden_layers": 27, "patch_size": 14, "vision_use_head": False}
GEMMA_SHARDS = 5


def checkpoint_config(version: str = "2.0") -> dict:
    """The checkpoint's config metadata for LTX-2 ("2.0") or LTX-2.3 ("2.3")."""
    if version == "2.3":
        return {"transformer": TRANSFORMER_LTX23, "vae": VAE, "audio_vae": AUDIO_VAE, "vocoder": VOCODER_LTX23}
    return {"transformer": TRANSFORMER, "vae": VAE, "audio_vae": AUDIO_VAE, "vocoder": VOCODER}


def gemma_config() -> dict:
    return {"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3", "mm_tokens_per_image": 256,
            "text_config": GEMMA_TEXT, "vision_config": GEMMA_VISION, "torch_dtype": "bfloat16"}


def checkpoint_layout(version: str = "2.0") -> dict[str, tuple[int, ...]]:
    """Every tensor of the LTX-2 19B (or LTX-2.3 22B) single-file checkpoint: official key -> shape."""
    return layouts.checkpoint_layout(checkpoint_config(version), GEMMA_TEXT["hidden_size"],
                                     GEMMA_TEXT["num_hidden_layers"])


def upsampler_layout(cfg: dict = SPATIAL_UPSAMPLER) -> dict[str, tuple[int, ...]]:
    return layouts.upsampler_layout(cfg)


def lora_layout(checkpoint: dict[str, tuple[int, ...]], rank: int = LORA_RANK) -> dict[str, tuple[int, ...]]:
    """lora_A / lora_B for every attention projection and feed-forward Linear of every block."""
    return layouts.lora_layout(checkpoint, TRANSFORMER["num_layers"], rank)


def gemma_layout() -> dict[str, tuple[int, ...]]:
    """The gemma-3-12b-it shards' tensors: the language model (original key names) and the vision tower."""
    layout = layouts.shapes(gemma.to_checkpoint(gemma.GemmaEncoder(gemma.GemmaConfig.from_config(gemma_config()))))
    v, mlp = GEMMA_VISION["hidden_size"], GEMMA_VISION["intermediate_size"]
    vt = "vision_tower.vision_model."
    layout[vt + "embeddings.patch_embedding.weight"] = (v, 3, 14, 14)
    layout[vt + "embeddings.patch_embedding.bias"] = (v,)
    layout[vt + "embeddings.position_embedding.weight"] = ((896 // 14) ** 2, v)
    for i in range(GEMMA_VISION["num_hidden_layers"]):
        p = f"{vt}encoder.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            layout[f"{p}self_attn.{proj}.weight"], layout[f"{p}self_attn.{proj}.bias"] = (v, v), (v,)
        layout[p + "mlp.fc1.weight"], layout[p + "mlp.fc1.bias"] = (mlp, v), (mlp,)
        layout[p + "mlp.fc2.weight"], layout[p + "mlp.fc2.bias"] = (v, mlp), (v,)
        for n in ("layer_norm1", "layer_norm2"):
            layout[f"{p}{n}.weight"], layout[f"{p}{n}.bias"] = (v,), (v,)
    layout[vt + "post_layernorm.weight"], layout[vt + "post_layernorm.bias"] = (v,), (v,)
    layout["multi_modal_projector.mm_input_projection_weight"] = (v, GEMMA_TEXT["hidden_size"])
    layout["multi_modal_projector.mm_soft_emb_norm.weight"] = (v,)
    return layout


_ITEM = {"BF16": 2, "F32": 4, "F16": 2, "F8_E4M3": 1}


def write_header_only(path: Path, layout: dict[str, tuple[int, ...]], metadata: dict[str, str],
                      dtype: str = "BF16") -> int:
    """A safetensors file with ``layout``'s header and a sparse body of the full length; returns its size."""
    header: dict = {"__metadata__": {**dict(sorted(metadata.items())), **SYNTHETIC}}
    offset = 0
    for key in sorted(layout):
        n = math.prod(layout[key]) * _ITEM[dtype]
        header[key] = {"dtype": dtype, "shape": list(layout[key]), "data_offsets": [offset, offset + n]}
        offset += n
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    path = Path(path)
    with open(path, "wb") as f:
        f.write(len(head).to_bytes(8, "little"))
        f.write(head)
    size = 8 + len(head) + offset
    os.truncate(path, size)  # a hole: the tensor bytes take no disk
    return size


# version -> the official file names (the 2.3 upsamplers: spatial x2 1.1, temporal x2 1.0)
FILE_NAMES = {
    "2.0": {"checkpoint": "ltx-2-19b-dev.safetensors",
            "spatial_upsampler": "ltx-2-spatial-upscaler-x2-1.0.safetensors",
            "temporal_upsampler": "ltx-2-temporal-upscaler-x2-1.0.safetensors",
            "distilled_lora": "ltx-2-19b-distilled-lora-384.safetensors"},
    "2.3": {"checkpoint": "ltx-2.3-22b-dev.safetensors",
            "spatial_upsampler": "ltx-2.3-spatial-upscaler-x2-1.1.safetensors",
            "temporal_upsampler": "ltx-2.3-temporal-upscaler-x2-1.0.safetensors",
            "distilled_lora": "ltx-2.3-22b-distilled-lora-384.safetensors"},
}
METADATA_VERSION = {"2.0": "2.0", "2.3": "2.3.0"}  # the checkpoint's model_version metadata


def write_full_size_model(folder: Path, dtype: str = "BF16", version: str = "2.0") -> dict[str, Path]:
    """Header-only LTX-2 19B (``version`` "2.0") or LTX-2.3 22B ("2.3") files in ``folder``: role -> path
    (checkpoint, spatial_upsampler, temporal_upsampler, distilled_lora, gemma), as a job's ``model:`` section
    names them."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = {role: folder / name for role, name in FILE_NAMES[version].items()}
    files["gemma"] = folder / "gemma-3-12b-it"
    layout = checkpoint_layout(version)
    write_header_only(files["checkpoint"], layout, {"config": json.dumps(checkpoint_config(version)),
                                                    "model_version": METADATA_VERSION[version]}, dtype)
    write_header_only(files["spatial_upsampler"], upsampler_layout(), {"config": json.dumps(SPATIAL_UPSAMPLER)}, dtype)
    write_header_only(files["temporal_upsampler"], upsampler_layout(TEMPORAL_UPSAMPLER),
                      {"config": json.dumps(TEMPORAL_UPSAMPLER)}, dtype)
    write_header_only(files["distilled_lora"], lora_layout(layout), {"format": "pt"}, "BF16")
    g = files["gemma"]
    g.mkdir(exist_ok=True)
    glayout = gemma_layout()
    keys = sorted(glayout)
    per = math.ceil(len(keys) / GEMMA_SHARDS)
    weight_map, total = {}, 0
    for s in range(GEMMA_SHARDS):
        name = f"model-{s + 1:05d}-of-{GEMMA_SHARDS:05d}.safetensors"
        shard = {k: glayout[k] for k in keys[s * per:(s + 1) * per]}
        write_header_only(g / name, shard, {"format": "pt"}, "BF16")
        for k, shape in shard.items():
            weight_map[k] = name
            total += 2 * math.prod(shape)
    (g / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                "weight_map": weight_map}, indent=1))
    (g / "config.json").write_text(json.dumps(gemma_config(), indent=1))
    # a tokenizer so the folder is complete (the tiny model's: these files are for planning, never for encoding)
    tiny_gemma = ensure_tiny_model()["gemma"]
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tiny_gemma / name).is_file():
            (g / name).write_bytes((tiny_gemma / name).read_bytes())
    return files
