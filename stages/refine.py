"""refine (stage 2): upscaled.zarr + text.zarr -> latents.zarr.

The upscaled video latent and the stage-1 audio latent are re-noised to the first stage-2 sigma
(.909375) with seeded noise, then sampled unguided over the distilled stage-2 sigmas, with the
distilled LoRA fused into the transformer for the two-stage pipeline (and the job's own LoRAs, as in
stage 1). Resumes per step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import mlx.core as mx
from pydantic import Field

from ltx2.spec.pipelines import SamplerName
from ltx2.spec.precision import Compute
from ltx2.spec.schedules import STAGE2_DISTILLED_SIGMAS

from .contract import BadInput, MemoryPlan
from .denoising import LatentLayout, check_conditioning, check_transformer, conditioned_states, sample_to_artifact, sampling_memory, sigmas_for
from .memory import weights_mode_choices
from .params import (DEFAULT_WEIGHTS_MODE, CondItem, DistilledLora, FixedSchedule, LoraStrengths, Schedule,
                     WeightsModeParam, compute_field)
from .registry import Port, PredictedOutput, StageContext, StageDef, StageParams


class Params(StageParams):
    # None: taken from the latents read (a hand run); the orchestrator always gives them
    width: int | None = Field(None, description="pixel width of the latents read (default: theirs)")
    height: int | None = Field(None, description="pixel height of the latents read (default: theirs)")
    frames: int | None = Field(None, description="pixel frames of the latents read (default: theirs)")
    fps: float | None = Field(None, gt=0, description="frame rate (default: the latents')")
    seed: int | None = Field(None, ge=0, description="noise seed (default: the seed the latents were made with)")
    schedule: Schedule = Field(FixedSchedule(sigmas=list(STAGE2_DISTILLED_SIGMAS)),
                               description="the stage-2 sigmas (default: the distilled model's last 3 steps)")
    distilled_lora: DistilledLora | None = Field(None, description="{strength: S} fuses the distilled LoRA "
                                                 "(weight role distilled_lora); none: the checkpoint alone")
    loras: LoraStrengths = Field([], description="strength of each user LoRA (weight roles lora.1, lora.2, ...)")
    sampler: SamplerName = Field("euler", description="euler, or res_2s (the HQ pipeline's second-order sampler: two "
                                 "transformer evaluations per step, fresh noise at each)")
    weights_mode: WeightsModeParam = Field(DEFAULT_WEIGHTS_MODE, description="transformer precision and streaming "
                                           "(the planner picks it)")
    conditioning: list[CondItem] = Field([], description="how each conditioning input applies (images encoded at "
                                         "this stage's size; a frozen soundtrack), in the order given")
    compute: Compute = compute_field()


def resolve(inputs: Mapping[str, Any], p: Params) -> Params:
    lat = inputs["latents"]
    facts = lat.facts
    filled = {"width": facts["width"], "height": facts["height"], "frames": facts["frame_count"], "fps": facts["fps"],
              "seed": lat.params.get("seed", 0)}
    out = p.model_copy(update={k: v for k, v in filled.items() if getattr(p, k) is None})
    if (out.width, out.height, out.frames) != (facts["width"], facts["height"], facts["frame_count"]):
        raise BadInput(f"refine: asked for {out.width}x{out.height}x{out.frames} but {lat.path} holds "
                       f"{facts['width']}x{facts['height']}x{facts['frame_count']} latents (run upscale first)")
    return out


def _geometry(ctx: StageContext):
    try:
        layout = LatentLayout.from_checkpoint(ctx.weights["checkpoint"])
    except ValueError as e:
        raise BadInput(f"refine: {e}") from e
    _, c, f, h, w = ctx.inputs["latents"].shape("video")
    if c != layout.video_channels:
        raise BadInput(f"refine: {ctx.inputs['latents'].path} has {c} latent channels, the checkpoint "
                       f"{layout.video_channels}")
    return layout, (f, h, w), ctx.inputs["latents"].shape("audio")[2]


def check(ctx: StageContext) -> None:
    check_transformer(ctx)
    _, grid, a_frames = _geometry(ctx)
    check_conditioning(ctx, grid, a_frames)


def estimate(ctx: StageContext) -> MemoryPlan:
    layout, grid, a_frames = _geometry(ctx)
    return sampling_memory(ctx, layout, grid, a_frames, 1)


def predict(ctx: StageContext) -> PredictedOutput:
    lat, p = ctx.inputs["latents"], ctx.params
    return PredictedOutput({"video": lat.shape("video"), "audio": lat.shape("audio")},
                           {**lat.facts, "frame_count": p.frames, "height": p.height, "width": p.width, "fps": p.fps})


def run(ctx: StageContext) -> None:
    layout, grid, a_frames = _geometry(ctx)
    sigmas = sigmas_for(ctx.params.schedule, layout)
    lat = ctx.inputs["latents"]
    # the upscaled video and the stage-1 audio re-noised to the first stage-2 sigma, conditioned as stage 1 was
    sample_to_artifact(ctx, layout, grid, a_frames, sigmas, None,
                       lambda: conditioned_states(ctx, layout, grid, a_frames, lat.read("video").astype(mx.float32),
                                                  lat.read("audio").astype(mx.float32)),
                       sigmas[0], sampler=ctx.params.sampler)


STAGE = StageDef(
    name="refine", version=2, summary="stage 2: upscaled latents re-noised and refined at full size",
    inputs={"latents": Port("latents"), "text": Port("text"), "conditioning": Port("conditioning", many=True)}, params=Params, output_kind="latents",
    output_name="latents.zarr", weights={"checkpoint": "transformer"}, optional_weights=("distilled_lora", "lora.*"),
    resumable=True, resolve=resolve, check=check, estimate=estimate, run=run, predict=predict,
    choices=lambda ctx: weights_mode_choices(ctx, "transformer"), streams="transformer",
    budget_fix="raise memory_budget or render fewer frames / a smaller size",
)
