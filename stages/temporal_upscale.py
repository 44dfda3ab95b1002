"""temporal-upscale: upscaled.zarr -> upscaled_t2.zarr, the video latent x2 in time (audio carried through).

F latent frames become 2F-1 (the causal VAE's first latent frame stands for one pixel frame), so N
pixel frames at fps become 2N-1 at 2*fps: the same first and last frame times. Height and width are
kept. Un-normalised with the video VAE's statistics, upsampled, normalised again, as ``upscale``
(``latent_upsample``). The refine stage then cleans the upsampled frames up, with positions at the
doubled fps. No official pipeline uses the temporal upscaler: this stage is this project's design.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ltx2.spec.precision import Compute

from .latent_upsample import upsampler_stage
from .params import compute_field
from .registry import StageParams


class Params(StageParams):
    scale: Literal[2] = Field(2, description="the temporal upsampler doubles the frame rate only: leave it out "
                                             "(or set 2)")
    compute: Compute = compute_field()


STAGE = upsampler_stage("temporal-upscale", "temporal_upsampler", Params, "upscaled_t2.zarr",
                        "video latents x2 in time (F -> 2F-1 latent frames, 2x fps)")
