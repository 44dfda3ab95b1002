"""denoise (stage 1): text.zarr -> stage1.zarr, video + audio latents sampled from seeded noise.

Guided (CFG / STG / modality guidance, per modality) for two-stage and one-stage, unguided with
the distilled sigma list for the distilled pipeline; the job's LoRAs (if any) fused on load. Checkpoints after every step; a killed run
resumes from its last step with the same result.
"""

from __future__ import annotations

from .base import StageContext, StageSpec
from .contract import BadInput, MemoryPlan
from .denoising import (LatentLayout, TokenState, canonical_loras, canonical_weights_mode, guider_params,
                        sample_to_artifact, sampling_memory, sigmas_for)

SPEC = StageSpec("denoise", inputs=("text",), output_kind="latents", weights=("checkpoint",),
                 optional_weights=("lora.*",), resumable=True,
                 budget_fix="raise memory_budget or render fewer frames / a smaller size")

DEFAULTS = {"width": 96, "height": 64, "frames": 9, "fps": 24.0, "seed": 0,
            "schedule": {"kind": "ltx2", "steps": "official"}, "guidance": None}


def resolve_params(inputs, p: dict) -> dict:
    out = {**DEFAULTS, **p}
    for k in ("width", "height", "frames", "seed"):
        if not isinstance(out[k], int) or isinstance(out[k], bool):
            raise BadInput(f"denoise: {k}={out[k]!r} must be an integer")
    if out["frames"] % 8 != 1:
        raise BadInput(f"denoise: frames={out['frames']} is not 8k+1; use {out['frames'] // 8 * 8 + 1}")
    for k in ("width", "height"):
        if out[k] % 32:
            raise BadInput(f"denoise: {k}={out[k]} is not a multiple of 32")
    out["weights_mode"] = canonical_weights_mode("denoise", out.get("weights_mode"))
    out["loras"] = canonical_loras("denoise", out.get("loras"))
    return out


def _geometry(ctx: StageContext):
    from .sampling import audio_latent_frames, video_latent_shape

    p = ctx.params
    layout = LatentLayout.from_checkpoint(ctx.weights["checkpoint"])
    v = video_latent_shape(p["frames"], p["height"], p["width"], channels=layout.video_channels)
    return layout, (v.frames, v.height, v.width), audio_latent_frames(p["frames"], p["fps"])


def estimate(ctx: StageContext) -> MemoryPlan:
    layout, grid, a_frames = _geometry(ctx)
    guidance = guider_params(ctx.params["guidance"], layout)
    return sampling_memory(ctx, layout, grid, a_frames, 1 if guidance is None else 4)


def run(ctx: StageContext) -> None:
    from .sampling import gaussian_noise, noise_key

    layout, grid, a_frames = _geometry(ctx)
    try:
        sigmas = sigmas_for(ctx.params["schedule"], layout)
        guidance = guider_params(ctx.params["guidance"], layout)
    except ValueError as e:
        raise BadInput(f"denoise: {e}") from e
    seed = ctx.params["seed"]

    def initial() -> TokenState:
        # stage 1 starts from pure noise (the noiser at scale 1 over an empty latent)
        tokens = grid[0] * grid[1] * grid[2]
        v = gaussian_noise(noise_key(seed, "denoise", "video"), (1, tokens, layout.video_channels))
        a = gaussian_noise(noise_key(seed, "denoise", "audio"),
                           (1, a_frames, layout.audio_channels * layout.audio_mel_bins))
        return TokenState(v, a)

    sample_to_artifact(ctx, layout, grid, a_frames, sigmas, guidance, initial)
