"""upscale: stage1.zarr -> upscaled.zarr, the video latent x2 in space (audio carried through).

The latent is un-normalised with the video VAE's per-channel statistics (from the checkpoint),
upsampled, and normalised again, as the official two-stage pipelines do.
"""

from __future__ import annotations

import mlx.core as mx

from .base import StageContext, StageSpec
from .contract import MemoryPlan
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
    from ltx2.models.upsampler import load_latent_statistics, load_upsampler, upsample_latent

    lat = ctx.inputs["latents"]
    upsampler = load_upsampler(ctx.weights["spatial_upsampler"])
    stats = load_latent_statistics(ctx.weights["checkpoint"])
    ctx.progress.step(0, 1)
    video = upsample_latent(lat.read("video"), upsampler, stats)
    mx.eval(video)
    scale_h = video.shape[3] // lat.shape("video")[3]
    scale_w = video.shape[4] // lat.shape("video")[4]
    w = ctx.writer()
    w.write_array("video", video)
    w.write_array("audio", lat.read("audio"))
    f = lat.facts
    w.finalize(facts={"frame_count": f["frame_count"], "height": f["height"] * scale_h, "width": f["width"] * scale_w,
                      "fps": f["fps"], "sigma": f["sigma"], "step": f["step"], "total_steps": f["total_steps"]})
    ctx.progress.step(1, 1)
