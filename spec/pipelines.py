"""Pipeline-level defaults of the official pipelines that are not a model version's (spec.versions holds those).

The HQ two-stage pipeline (ltx-pipelines' ``ti2vid_two_stages_hq``, for LTX-2 and LTX-2.3 alike) samples both
stages with the res_2s second-order sampler, 15 stage-1 steps, guidance without STG (and its own rescale
values), and fuses the distilled LoRA into stage 1 at 0.25 and stage 2 at 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .versions import GuidanceDefaults

SamplerName = Literal["euler", "res_2s"]
SAMPLERS: tuple[str, ...] = ("euler", "res_2s")


@dataclass(frozen=True)
class HqDefaults:
    sampler: SamplerName  # both stages
    steps: int  # LTX2Scheduler steps of stage 1 (whatever the model version)
    video_guidance: GuidanceDefaults
    audio_guidance: GuidanceDefaults
    stg_blocks: tuple[int, ...]  # no STG: no blocks perturbed
    stage1_distilled_lora: float  # distilled LoRA strength fused into stage 1...
    stage2_distilled_lora: float  # ...and into stage 2


HQ = HqDefaults(
    sampler="res_2s", steps=15,
    video_guidance=GuidanceDefaults(cfg=3.0, stg=0.0, rescale=0.45, modality=3.0),
    audio_guidance=GuidanceDefaults(cfg=7.0, stg=0.0, rescale=1.0, modality=3.0),
    stg_blocks=(), stage1_distilled_lora=0.25, stage2_distilled_lora=0.5,
)
