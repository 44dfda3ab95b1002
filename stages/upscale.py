"""upscale: stage1.zarr -> upscaled.zarr, the video latent x2 in space (audio carried through).

The latent is un-normalised with the video VAE's per-channel statistics (from the checkpoint),
upsampled, and normalised again, as the official two-stage pipelines do (``latent_upsample``, shared
with temporal-upscale).
"""

from __future__ import annotations

from .base import StageContext, StageSpec
from .contract import MemoryPlan
from .latent_upsample import upsample_memory, upsample_to_artifact

SPEC = StageSpec("upscale", inputs=("latents",), output_kind="latents", weights=("spatial_upsampler", "checkpoint"),
                 budget_fix="raise memory_budget")


def resolve_params(_inputs, p: dict) -> dict:
    return {"scale": 2, **p}


def estimate(ctx: StageContext) -> MemoryPlan:
    return upsample_memory(ctx, "spatial_upsampler")


def run(ctx: StageContext) -> None:
    upsample_to_artifact(ctx, "spatial_upsampler")
