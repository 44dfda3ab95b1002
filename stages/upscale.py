"""upscale: stage1.zarr -> upscaled.zarr, the video latent x2 in space (audio carried through).

The latent is un-normalised with the video VAE's per-channel statistics (from the checkpoint),
upsampled, and normalised again, as the official two-stage pipelines do (``latent_upsample``, shared
with temporal-upscale).
"""

from __future__ import annotations

from .base import StageContext, StageSpec
from .contract import MemoryPlan
from .latent_upsample import upsample_to_artifact
from .memory import COMPUTE_BYTES, weight_bytes

SPEC = StageSpec("upscale", inputs=("latents",), output_kind="latents", weights=("spatial_upsampler", "checkpoint"),
                 budget_fix="raise memory_budget")


def resolve_params(_inputs, p: dict) -> dict:
    return {"scale": 2, **p}


def estimate(ctx: StageContext) -> MemoryPlan:
    from ltx2.models.weights import read_header

    w = weight_bytes(ctx.weights["spatial_upsampler"], ("",))
    mid = int(read_header(ctx.weights["spatial_upsampler"]).config().get("mid_channels", 1024))
    _, _, f, h, wd = ctx.inputs["latents"].shape("video")
    # a few full-width activations at the upsampled size (4x the tokens)
    return MemoryPlan(w, 6 * f * h * wd * 4 * mid * COMPUTE_BYTES)


def run(ctx: StageContext) -> None:
    upsample_to_artifact(ctx, "spatial_upsampler")
