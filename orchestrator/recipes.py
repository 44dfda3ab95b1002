"""The pipelines, each a declarative recipe: which stages run, how their ports are wired, and the
parameters each gets from the job. Adding a stage to a pipeline is a line here.

What each pipeline does (as the official ltx_pipelines run them):

``distilled`` (the distilled checkpoint, no CFG, so no negative prompt and one transformer pass
per step): stage 1 denoises at half the target width and height from pure noise with the 8 fixed
distilled sigmas; the video latent is upscaled x2 (un-normalised with the video VAE's per-channel
statistics, upsampled, normalised again); refine re-noises the upscaled video latent AND the
stage-1 audio latent to sigma .909375 and runs the 3 remaining distilled sigmas at full size with
the same checkpoint. Audio is therefore refined too.
``two-stage`` (the dev checkpoint): stage 1 as above at half size but guided (CFG with the negative
prompt, STG, modality guidance, rescale; per-modality parameters) over ``steps`` LTX2Scheduler
sigmas; x2 upscale; refine as in ``distilled`` (same 3 stage-2 sigmas, no CFG) with the distilled
LoRA fused into the checkpoint.
``one-stage`` (the dev checkpoint): guided denoise at full size; no upscale, no refine: decode and
vocode read stage1.zarr.
``hq`` (the dev checkpoint; ltx-pipelines' ti2vid_two_stages_hq, for LTX-2 and LTX-2.3): as ``two-stage`` but
both stages sample with res_2s (a second-order step: two transformer evaluations and two fresh noise
injections per step), stage 1 over 15 LTX2Scheduler steps with guidance without STG, and the distilled LoRA
fused into stage 1 (0.25) and stage 2 (0.5); defaults in spec.pipelines.HQ. The official loop seeds its
injection noise with a fixed seed; here it derives from ``seed`` per stage and step (so resume is exact).
Stage 1 renders at target / the spatial upsampler's scale: half size with the x2 upsamplers, 2/3 with
LTX-2.3's x1.5 one.
``temporal_upscale`` (distilled and two-stage; this project's design, no official pipeline does it):
after the x2 spatial upscale the temporal x2 upscaler doubles the latent frames (F -> 2F-1) and
refine runs at 2N-1 frames and 2*fps on them; the audio latent is carried unchanged.

Noise: the official pipelines draw all noise from one generator seeded once. Here each stage that
draws noise (denoise, refine, and decode when its VAE is timestep-conditioned) derives it from
``seed`` itself, so ``seed`` is one of its parameters. The stage-1 LTX2Scheduler sigmas do not
depend on resolution (the official pipelines use its default token count).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ltx2.spec.geometry import OFFICIAL_DECODE_TILING
from ltx2.spec.pipelines import HQ
from ltx2.spec.schedules import DISTILLED_SIGMAS, STAGE2_DISTILLED_SIGMAS

from .job import Job

ParamsOf = Callable[[Job], dict[str, Any]]


@dataclass(frozen=True)
class Node:
    """One stage of a recipe. ``inputs``: port -> the node whose output it reads (``a|b``: the first of
    them the job runs). ``params``: the stage's parameters from the job. ``planned``: the memory planner
    may replace parameters with the stage's memory choices (weights precision, decode tiles)."""

    stage: str
    inputs: dict[str, str] = field(default_factory=dict)
    params: ParamsOf = lambda job: {}
    when: Callable[[Job], bool] = lambda job: True
    planned: Callable[[Job], bool] = lambda job: False
    output: Callable[[Job], Path] | None = None  # a file output's path (export, preview); artifacts are named
    user_loras: bool = False  # reads the job's own LoRAs (roles lora.1, lora.2, ...)
    extra_roles: tuple[str, ...] = ()  # optional weight roles it reads in this recipe (distilled_lora)


def _stage1_size(job: Job) -> dict[str, int]:
    width, height = job.stage1_size  # target / upsampler scale in the two-stage pipelines
    return dict(width=width, height=height)


def hq_guidance(job: Job) -> dict[str, Any]:
    """The HQ pipeline's guidance: its official values (spec.pipelines.HQ: no STG) for every field the job leaves
    out, the job's own where it sets them."""
    out: dict[str, Any] = {}
    for m, spec in (("video", HQ.video_guidance), ("audio", HQ.audio_guidance)):
        given = getattr(job.guidance, m)
        mine = given.model_dump(include=given.model_fields_set) if m in job.guidance.model_fields_set else {}
        out[m] = {"cfg": spec.cfg, "stg": spec.stg, "rescale": spec.rescale, "modality": spec.modality,
                  "stg_blocks": list(HQ.stg_blocks), **mine}
    return out


def text_params(job: Job) -> dict[str, Any]:
    return {"prompt": job.prompt, "negative_prompt": job.negative_prompt if job.guided else None}


def stage1_params(job: Job) -> dict[str, Any]:
    hq = job.pipeline == "hq"
    if job.pipeline == "distilled":
        schedule, guidance = {"kind": "fixed", "sigmas": list(DISTILLED_SIGMAS)}, None
    elif hq:  # the HQ step count whatever the model version
        schedule, guidance = {"kind": "ltx2", "steps": job.steps or HQ.steps}, hq_guidance(job)
    else:  # steps left out (None): the checkpoint version's official count (its identity is in the key)
        schedule, guidance = {"kind": "ltx2", "steps": job.steps}, job.guidance
    return {**_stage1_size(job), "frames": job.frames, "fps": job.fps, "seed": job.seed, "schedule": schedule,
            "guidance": guidance, "loras": job.lora_strengths, "sampler": HQ.sampler if hq else "euler",
            "distilled_lora": {"strength": HQ.stage1_distilled_lora} if hq else None}


def refine_params(job: Job) -> dict[str, Any]:
    # after temporal-upscale refine works at 2N-1 frames and 2*fps (its positions use fps: timing stays right)
    return {"width": job.width, "height": job.height, "frames": job.output_frames, "fps": job.output_fps,
            "seed": job.seed, "schedule": {"kind": "fixed", "sigmas": list(STAGE2_DISTILLED_SIGMAS)},
            "distilled_lora": _stage2_lora(job), "loras": job.lora_strengths,
            "sampler": HQ.sampler if job.pipeline == "hq" else "euler"}


def _stage2_lora(job: Job) -> dict[str, float] | None:
    if job.pipeline == "hq":
        return {"strength": HQ.stage2_distilled_lora}
    return {"strength": job.distilled_lora_strength} if job.pipeline == "two-stage" else None


def resolve_tiling(job: Job) -> dict[str, int] | None:
    """The decode tiling actually used: None (untiled) or tile sizes, with tiling dropped along axes
    that one tile already covers (``auto``: the official tiles, which the planner may shrink to fit)."""
    if job.tiling == "off":
        return None
    t = OFFICIAL_DECODE_TILING if job.tiling == "auto" else job.tiling.model_dump()
    out: dict[str, int] = {}
    if t["spatial_tile"] is not None and max(job.width, job.height) > t["spatial_tile"]:
        out.update(spatial_tile=t["spatial_tile"], spatial_overlap=t["spatial_overlap"])
    if t["temporal_tile"] is not None and job.output_frames > t["temporal_tile"]:
        out.update(temporal_tile=t["temporal_tile"], temporal_overlap=t["temporal_overlap"])
    return out or None


def _always(job: Job) -> bool:
    return True


_LARGE = dict(planned=_always)  # text-encode, denoise, refine: the planner picks the weights mode
_TEXT = Node("text-encode", params=text_params, **_LARGE)
_STAGE1 = Node("denoise", {"text": "text-encode"}, stage1_params, user_loras=True, **_LARGE)
_HQ_STAGE1 = Node("denoise", {"text": "text-encode"}, stage1_params, user_loras=True,
                  extra_roles=("distilled_lora",), **_LARGE)


def _outputs(latents: str) -> tuple[Node, ...]:
    """decode, vocode, export and the preview, reading the final latents from node ``latents``."""
    return (
        Node("decode", {"latents": latents}, lambda job: {"tiling": resolve_tiling(job), "seed": job.seed},
             planned=lambda job: job.tiling == "auto"),
        Node("vocode", {"latents": latents}),
        Node("export", {"frames": "decode", "audio": "vocode"}, lambda job: {"crf": job.crf, "output": str(job.output)},
             output=lambda job: job.output),
        Node("preview", {"frames": "decode", "audio": "vocode"}, when=lambda job: job.preview,
             output=lambda job: job.preview_path),
    )


def _two_stage(refine_roles: tuple[str, ...], stage1: Node = _STAGE1) -> tuple[Node, ...]:
    return (
        _TEXT, stage1,
        Node("upscale", {"latents": "denoise"}, lambda job: {"scale": job.spatial_scale}),
        Node("temporal-upscale", {"latents": "upscale"}, when=lambda job: job.temporal_upscale),
        Node("refine", {"latents": "temporal-upscale|upscale", "text": "text-encode"}, refine_params,
             user_loras=True, extra_roles=refine_roles, **_LARGE),
        *_outputs("refine"),
    )


RECIPES: dict[str, tuple[Node, ...]] = {
    "distilled": _two_stage(()),
    "two-stage": _two_stage(("distilled_lora",)),
    "one-stage": (_TEXT, _STAGE1, *_outputs("denoise")),
    "hq": _two_stage(("distilled_lora",), _HQ_STAGE1),
}
