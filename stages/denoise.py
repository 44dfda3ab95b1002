"""denoise (stage 1): text.zarr -> stage1.zarr, video + audio latents sampled from seeded noise.

Guided (CFG / STG / modality guidance, per modality) for two-stage and one-stage, unguided with
the distilled sigma list for the distilled pipeline; the job's LoRAs (if any) fused on load. Checkpoints
after every step; a killed run resumes from its last step with the same result.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from ltx2.spec.geometry import audio_latent_frames, video_latent_shape
from ltx2.spec.pipelines import SamplerName
from ltx2.spec.precision import Compute

from .contract import BadInput, MemoryPlan
from .denoising import (LatentLayout, check_conditioning, check_transformer, conditioned_states, guider_params, sample_to_artifact,
                        sampling_memory, sigmas_for, stg_blocks)
from .memory import weights_mode_choices
from .params import (DEFAULT_WEIGHTS_MODE, CondItem, DistilledLora, Guidance, LoraStrengths, Ltx2Schedule, RetakeWindow,
                     Schedule, WeightsModeParam, compute_field)
from .registry import Port, PredictedOutput, StageContext, StageDef, StageParams


class Params(StageParams):
    width: int = Field(96, ge=32, multiple_of=32, description="latent grid width in pixels (multiple of 32)")
    height: int = Field(64, ge=32, multiple_of=32, description="latent grid height in pixels (multiple of 32)")
    frames: int = Field(9, ge=1, description="pixel frames, 8k+1")
    fps: float = Field(24.0, gt=0, description="frame rate (positions are in seconds)")
    seed: int = Field(0, ge=0, description="noise seed")
    schedule: Schedule = Field(Ltx2Schedule(), description="{kind: fixed, sigmas: [...]} or {kind: ltx2, steps: N} "
                                                           "(steps left out: the checkpoint's official count)")
    guidance: Guidance | None = Field(None, description="multi-modal guidance per stream; none: unguided (distilled)")
    loras: LoraStrengths = Field([], description="strength of each user LoRA (weight roles lora.1, lora.2, ...)")
    sampler: SamplerName = Field("euler", description="euler, or res_2s (the HQ pipeline's second-order sampler: "
                                 "two transformer evaluations per step, fresh noise at each)")
    distilled_lora: DistilledLora | None = Field(None, description="{strength: S} fuses the distilled LoRA (role "
                                                 "distilled_lora; the HQ pipeline's stage 1); none: the checkpoint")
    weights_mode: WeightsModeParam = Field(DEFAULT_WEIGHTS_MODE, description="transformer precision and streaming "
                                           "(the planner picks it)")
    conditioning: list[CondItem] = Field([], description="how each conditioning input applies, in the order given: "
                                         "{use: replace|keyframe|reference|frozen|source, frame, strength, ...}")
    retake: RetakeWindow | None = Field(None, description="{start, end} seconds: regenerate that window of the "
                                        "`source` inputs, keep the rest (retake)")
    compute: Compute = compute_field()

    @field_validator("frames")
    @classmethod
    def _frames(cls, v: int) -> int:
        if v % 8 != 1:
            below = max(v // 8 * 8 + 1 - (8 if v % 8 == 0 else 0), 1)
            raise ValueError(f"is not 8k+1; use {below} or {below + 8}")
        return v


def _geometry(ctx: StageContext):
    p = ctx.params
    try:
        layout = LatentLayout.from_checkpoint(ctx.weights["checkpoint"])
    except ValueError as e:
        raise BadInput(f"denoise: {e}") from e
    v = video_latent_shape(p.frames, p.height, p.width, channels=layout.video_channels)
    return layout, (v.frames, v.height, v.width), audio_latent_frames(p.frames, p.fps)


def check(ctx: StageContext) -> None:
    layout = check_transformer(ctx)
    if ctx.params.guidance is not None:
        stg_blocks(ctx.params.guidance, layout)
    _, grid, a_frames = _geometry(ctx)
    check_conditioning(ctx, grid, a_frames)
    window = ctx.params.retake
    if window is not None and not 0 <= window.start < window.end <= ctx.params.frames / ctx.params.fps:
        raise BadInput(f"denoise: retake window {window.start}..{window.end} s is empty or outside the clip's "
                       f"0..{ctx.params.frames / ctx.params.fps:g} s")


def estimate(ctx: StageContext) -> MemoryPlan:
    layout, grid, a_frames = _geometry(ctx)
    guidance = guider_params(ctx.params.guidance, layout)
    return sampling_memory(ctx, layout, grid, a_frames, 1 if guidance is None else 4)


def predict(ctx: StageContext) -> PredictedOutput:
    layout, (f, h, w), a_frames = _geometry(ctx)
    p = ctx.params
    return PredictedOutput({"video": (1, layout.video_channels, f, h, w),
                            "audio": (1, layout.audio_channels, a_frames, layout.audio_mel_bins)},
                           {"frame_count": p.frames, "height": p.height, "width": p.width, "fps": p.fps,
                            "sigma": 0.0, "step": 0, "total_steps": 0})


def run(ctx: StageContext) -> None:
    layout, grid, a_frames = _geometry(ctx)
    sigmas = sigmas_for(ctx.params.schedule, layout)
    guidance = guider_params(ctx.params.guidance, layout)
    # stage 1 starts from pure noise (the noiser at scale 1 over an empty latent, or over a retake's source)
    sample_to_artifact(ctx, layout, grid, a_frames, sigmas, guidance,
                       lambda: conditioned_states(ctx, layout, grid, a_frames), 1.0, sampler=ctx.params.sampler)


STAGE = StageDef(
    name="denoise", version=2, summary="stage 1: text contexts (+ conditioning) -> video + audio latents from seeded noise",
    inputs={"text": Port("text"), "conditioning": Port("conditioning", many=True)}, params=Params, output_kind="latents", output_name="stage1.zarr",
    weights={"checkpoint": "transformer"}, optional_weights=("distilled_lora", "lora.*"), resumable=True,
    estimate=estimate, run=run, check=check, predict=predict,
    choices=lambda ctx: weights_mode_choices(ctx, "transformer"), streams="transformer",
    budget_fix="raise memory_budget or render fewer frames / a smaller size",
)
