"""temporal-upscale: upscaled.zarr -> upscaled_t2.zarr, the video latent x2 in time (audio carried through).

F latent frames become 2F-1 (the causal VAE's first latent frame stands for one pixel frame), so N
pixel frames at fps become 2N-1 at 2*fps: the same first and last frame times. Height and width are
kept. Un-normalised with the video VAE's statistics, upsampled, normalised again, as ``upscale``
(``latent_upsample``). The refine stage then cleans the upsampled frames up, with positions at the
doubled fps. No official pipeline uses the temporal upscaler: this stage is this project's design.
"""

from __future__ import annotations

from .base import StageContext, StageSpec
from .contract import BadInput, MemoryPlan
from .latent_upsample import upsample_memory, upsample_to_artifact

SPEC = StageSpec("temporal-upscale", inputs=("latents",), output_kind="latents",
                 weights=("temporal_upsampler", "checkpoint"), budget_fix="raise memory_budget")


def resolve_params(_inputs, p: dict) -> dict:
    out = {"scale": 2, **p}
    if out["scale"] != 2:
        raise BadInput(f"temporal-upscale: scale={out['scale']!r}; the temporal upsampler doubles the frame rate "
                       "only: leave scale out (or set 2)")
    return out


def estimate(ctx: StageContext) -> MemoryPlan:
    return upsample_memory(ctx, "temporal_upsampler")


def run(ctx: StageContext) -> None:
    upsample_to_artifact(ctx, "temporal_upsampler")
