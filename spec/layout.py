"""The weight files of a job and the parts a checkpoint is made of, by name.

Weight roles name the files a stage reads (``checkpoint``, ``gemma``, ``spatial_upsampler``,
``temporal_upsampler``, ``distilled_lora``, and ``lora.1``, ``lora.2``, ... for a job's own LoRAs).
The single-file checkpoint holds several components, each under its own key prefixes; a *part* is
what one network loads (some components together), a stage declares which part it reads (its
registry entry), and a converted folder (`ltx2 convert`) stores each part in its own file, so the
part names below are also the keys of a converted folder's manifest.

A key belongs to the component with the longest prefix it starts with: the two text connectors sit
under the transformer's prefix but belong to the text embeddings, not to the transformer.
"""

from __future__ import annotations

# key prefixes of the official single-file checkpoint
TRANSFORMER = "model.diffusion_model."
VIDEO_CONNECTOR = TRANSFORMER + "video_embeddings_connector."
AUDIO_CONNECTOR = TRANSFORMER + "audio_embeddings_connector."
TEXT_PROJECTION = "text_embedding_projection."
VIDEO_ENCODER = "vae.encoder."
VIDEO_DECODER = "vae.decoder."
VIDEO_STATISTICS = "vae.per_channel_statistics."
AUDIO_ENCODER = "audio_vae.encoder."
AUDIO_DECODER = "audio_vae.decoder."
AUDIO_STATISTICS = "audio_vae.per_channel_statistics."
VOCODER = "vocoder."

# component -> key prefixes, as `ltx2 weights check` names them: every key of a checkpoint is in one of them
COMPONENTS: dict[str, tuple[str, ...]] = {
    "transformer": (TRANSFORMER,),
    "text connectors": (VIDEO_CONNECTOR, AUDIO_CONNECTOR),
    "text projection": (TEXT_PROJECTION,),
    "video VAE encoder": (VIDEO_ENCODER,),
    "video VAE decoder": (VIDEO_DECODER,),
    "video VAE statistics": (VIDEO_STATISTICS,),
    "audio VAE encoder": (AUDIO_ENCODER,),
    "audio VAE decoder": (AUDIO_DECODER,),
    "audio VAE statistics": (AUDIO_STATISTICS,),
    "vocoder": (VOCODER,),
}
# every component's prefixes: a file with a key under one of them is (a piece of) a checkpoint
CHECKPOINT_PREFIXES: tuple[str, ...] = tuple(p for ps in COMPONENTS.values() for p in ps)

# checkpoint part -> key prefixes in the official single-file checkpoint (a network and what it loads with it)
CHECKPOINT_PARTS: dict[str, tuple[str, ...]] = {
    "transformer": (TRANSFORMER,),  # minus the two embeddings connectors (text_embeddings)
    "text_embeddings": (TEXT_PROJECTION, VIDEO_CONNECTOR, AUDIO_CONNECTOR),
    "video_decoder": (VIDEO_DECODER, VIDEO_STATISTICS),
    "video_encoder": (VIDEO_ENCODER, VIDEO_STATISTICS),
    "latent_statistics": (VIDEO_STATISTICS,),
    "audio_decoder": (AUDIO_DECODER, AUDIO_STATISTICS, VOCODER),
    "audio_encoder": (AUDIO_ENCODER, AUDIO_STATISTICS),
    "vocoder": (VOCODER,),
}


def nested_prefixes(prefixes: tuple[str, ...]) -> tuple[str, ...]:
    """The other components' prefixes that lie under ``prefixes``: their keys are not ``prefixes``' own
    (for the transformer: the two text connectors)."""
    return tuple(q for ps in COMPONENTS.values() for q in ps if q not in prefixes and q.startswith(prefixes))


# Where the language model lives in the known Gemma-3 exports, most specific first:
#   original google/gemma-3 (and the fixture):  language_model.model.*
#   transformers >= 4.52 Gemma3ForConditionalGeneration:  model.language_model.*
#   text-only Gemma3ForCausalLM:  model.*
GEMMA_LM_PREFIXES = ("language_model.model.", "model.language_model.", "model.")

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
# The tiny LTX-2.3 variant (`model: tiny-2.3`), in the real 2.3 layout, in its own folder beside the tiny one.
TINY_FILES_LTX23: dict[str, str] = {
    "checkpoint": "ltx2.3-tiny.safetensors",
    "spatial_upsampler": "ltx2.3-tiny-spatial-upscaler-x2.safetensors",
    "temporal_upsampler": "ltx2.3-tiny-temporal-upscaler-x2.safetensors",
    "distilled_lora": "ltx2.3-tiny-distilled-lora.safetensors",
    "gemma": "gemma",
}
# job model name -> its files
TINY_MODELS: dict[str, dict[str, str]] = {"tiny": TINY_FILES, "tiny-2.3": TINY_FILES_LTX23}


def lora_role(index: int) -> str:
    """The weight role of the job's ``index``-th LoRA (0-based)."""
    return f"lora.{index + 1}"
