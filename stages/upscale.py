"""upscale: stage1.zarr -> upscaled.zarr, the video latent x2 in space (audio carried through).

The latent is un-normalised with the video VAE's per-channel statistics (from the checkpoint),
upsampled, and normalised again, as the official two-stage pipelines do (``latent_upsample``, shared
with temporal-upscale).
"""

from __future__ import annotations

from pydantic import Field

from .latent_upsample import upsampler_stage
from .registry import StageParams


class Params(StageParams):
    scale: int = Field(2, description="the spatial upsampler's scale (the two-stage pipelines use x2)")


STAGE = upsampler_stage("upscale", "spatial_upsampler", Params, "upscaled.zarr",
                        "video latents x2 in space (spatial latent upsampler)")
