"""refine (stage 2): upscaled.zarr + text.zarr -> latents.zarr.

The upscaled video latent and the stage-1 audio latent are re-noised to the first stage-2 sigma
(.909375) with seeded noise, then sampled unguided over the distilled stage-2 sigmas, with the
distilled LoRA fused into the transformer for the two-stage pipeline (and the job's own LoRAs, as in
stage 1). Resumes per step.
"""

from __future__ import annotations

from .base import StageContext, StageSpec
from .contract import BadInput, MemoryPlan
from .denoising import (LatentLayout, TokenState, canonical_loras, canonical_weights_mode, sample_to_artifact,
                        sampling_memory, sigmas_for)

SPEC = StageSpec("refine", inputs=("latents", "text"), output_kind="latents", weights=("checkpoint",),
                 optional_weights=("distilled_lora", "lora.*"), resumable=True,
                 budget_fix="raise memory_budget or render fewer frames / a smaller size")


def resolve_params(inputs, p: dict) -> dict:
    from ltx2.orchestrator.graph import DISTILLED_STAGE2_SIGMAS

    lat = inputs["latents"]
    facts = lat.facts
    out = {"width": facts["width"], "height": facts["height"], "frames": facts["frame_count"], "fps": facts["fps"],
           "seed": lat.params.get("seed", 0), "schedule": {"kind": "fixed", "sigmas": list(DISTILLED_STAGE2_SIGMAS)},
           "distilled_lora": None, **p}
    if (out["width"], out["height"], out["frames"]) != (facts["width"], facts["height"], facts["frame_count"]):
        raise BadInput(f"refine: asked for {out['width']}x{out['height']}x{out['frames']} but {lat.path} holds "
                       f"{facts['width']}x{facts['height']}x{facts['frame_count']} latents (run upscale first)")
    out["weights_mode"] = canonical_weights_mode("refine", out.get("weights_mode"))
    out["loras"] = canonical_loras("refine", out.get("loras"))
    return out


def _geometry(ctx: StageContext):
    layout = LatentLayout.from_checkpoint(ctx.weights["checkpoint"])
    _, c, f, h, w = ctx.inputs["latents"].shape("video")
    if c != layout.video_channels:
        raise BadInput(f"refine: {ctx.inputs['latents'].path} has {c} latent channels, the checkpoint "
                       f"{layout.video_channels}")
    return layout, (f, h, w), ctx.inputs["latents"].shape("audio")[2]


def estimate(ctx: StageContext) -> MemoryPlan:
    layout, grid, a_frames = _geometry(ctx)
    return sampling_memory(ctx, layout, grid, a_frames, 1)


def run(ctx: StageContext) -> None:
    from .sampling import gaussian_noise, noise_key, noise_latent, patchify_audio, patchify_video

    layout, grid, a_frames = _geometry(ctx)
    try:
        sigmas = sigmas_for(ctx.params["schedule"], layout)
    except ValueError as e:
        raise BadInput(f"refine: {e}") from e
    lat, seed = ctx.inputs["latents"], ctx.params["seed"]

    def initial() -> TokenState:
        v, a = patchify_video(lat.read("video")), patchify_audio(lat.read("audio"))
        nv = gaussian_noise(noise_key(seed, "refine", "video"), v.shape)
        na = gaussian_noise(noise_key(seed, "refine", "audio"), a.shape)
        return TokenState(noise_latent(v, nv, 1.0, sigmas[0]), noise_latent(a, na, 1.0, sigmas[0]))

    sample_to_artifact(ctx, layout, grid, a_frames, sigmas, None, initial)
