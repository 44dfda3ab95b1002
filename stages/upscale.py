"""upscale: stage1.zarr -> upscaled.zarr, the video latent x2 (or x1.5) in space (audio carried through).

The latent is un-normalised with the video VAE's per-channel statistics (from the checkpoint),
upsampled, and normalised again, as the official two-stage pipelines do (``latent_upsample``, shared
with temporal-upscale).
"""

from __future__ import annotations

from pydantic import Field, field_validator

from ltx2.spec.geometry import two_stage_factors
from ltx2.spec.precision import Compute

from .latent_upsample import upsampler_stage
from .params import compute_field
from .registry import StageParams


class Params(StageParams):
    scale: float = Field(2.0, description="the spatial upsampler's scale: 2, or 1.5 (LTX-2.3's rational x1.5 "
                                          "upsampler); the file given must be of this scale")
    compute: Compute = compute_field()

    @field_validator("scale")
    @classmethod
    def _scale(cls, v: float) -> float:
        two_stage_factors(v)  # ValueError names the scales the pipelines run
        return float(v)


STAGE = upsampler_stage("upscale", "spatial_upsampler", Params, "upscaled.zarr",
                        "video latents x2 or x1.5 in space (spatial latent upsampler)")
