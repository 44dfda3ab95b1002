"""upscale: stage1.zarr -> upscaled.zarr, the video latent x2 in space (audio carried through).

The latent is un-normalised with the video VAE's per-channel statistics (from the checkpoint),
upsampled, and normalised again, as the official two-stage pipelines do (``latent_upsample``, shared
with temporal-upscale).
"""

from __future__ import annotations

from pydantic import Field

from .latent_upsample import check_upsampler, predict_upsampled, upsample_memory, upsample_to_artifact
from .registry import Port, StageDef, StageParams


class Params(StageParams):
    scale: int = Field(2, description="the spatial upsampler's scale (the two-stage pipelines use x2)")


STAGE = StageDef(
    name="upscale", version=1, summary="video latents x2 in space (spatial latent upsampler)",
    inputs={"latents": Port("latents")}, params=Params, output_kind="latents", output_name="upscaled.zarr",
    # the checkpoint provides the video VAE's per-channel statistics (un-/re-normalisation)
    weights={"spatial_upsampler": None, "checkpoint": "latent_statistics"},
    check=lambda ctx: check_upsampler(ctx, "spatial_upsampler"),
    estimate=lambda ctx: upsample_memory(ctx, "spatial_upsampler"),
    run=lambda ctx: upsample_to_artifact(ctx, "spatial_upsampler"),
    predict=lambda ctx: predict_upsampled(ctx, "spatial_upsampler"),
    budget_fix="raise memory_budget",
)
