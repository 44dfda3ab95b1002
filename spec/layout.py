"""The weight files of a job and the parts a checkpoint is made of, by name.

Weight roles name the files a stage reads (``checkpoint``, ``gemma``, ``spatial_upsampler``,
``temporal_upsampler``, ``distilled_lora``, and ``lora.1``, ``lora.2``, ... for a job's own LoRAs).
The single-file checkpoint holds several parts; a stage declares which one it reads (its registry
entry), and a converted folder (`ltx2 convert`) stores each part in its own file, so the part names
below are also the keys of a converted folder's manifest.
"""

from __future__ import annotations

# checkpoint part -> key prefixes in the official single-file checkpoint
CHECKPOINT_PARTS: dict[str, tuple[str, ...]] = {
    "transformer": ("model.diffusion_model.",),  # minus the two embeddings connectors (text_embeddings)
    "text_embeddings": ("text_embedding_projection.", "model.diffusion_model.video_embeddings_connector.",
                        "model.diffusion_model.audio_embeddings_connector."),
    "video_decoder": ("vae.decoder.", "vae.per_channel_statistics."),
    "video_encoder": ("vae.encoder.", "vae.per_channel_statistics."),
    "latent_statistics": ("vae.per_channel_statistics.",),
    "audio_decoder": ("audio_vae.decoder.", "audio_vae.per_channel_statistics.", "vocoder."),
}

# Roles a converted folder can serve, by the official file they stand in for.
CONVERTED_ROLES: dict[str, tuple[str, ...]] = {
    "checkpoint": ("transformer", "text_embeddings", "video_decoder", "latent_statistics", "audio_decoder",
                   "vocoder"),
    "gemma": ("gemma",),
    "spatial_upsampler": ("spatial_upsampler",),
    "temporal_upsampler": ("temporal_upsampler",),
}

# The generated `tiny` model, in the real file layouts: role -> name inside the tiny folder.
TINY_FILES: dict[str, str] = {
    "checkpoint": "ltx2-tiny.safetensors",
    "spatial_upsampler": "ltx2-tiny-spatial-upscaler-x2.safetensors",
    "temporal_upsampler": "ltx2-tiny-temporal-upscaler-x2.safetensors",
    "distilled_lora": "ltx2-tiny-distilled-lora.safetensors",
    "gemma": "gemma",
}


def lora_role(index: int) -> str:
    """The weight role of the job's ``index``-th LoRA (0-based)."""
    return f"lora.{index + 1}"
