"""The stage graph: which stages a job runs, in order, and what each reads, writes and depends on.

Each :class:`Stage` names its input artifacts, its one output artifact, the parameters that shape
that output (and only those: the memory budget or the work folder do not belong here) and the
weight files or folders it reads, by role (``checkpoint``, ``gemma``, ``spatial_upsampler``,
``temporal_upsampler``, ``distilled_lora``, and ``lora.1``, ``lora.2``, ... for the job's own LoRAs, whose
strengths are the sampling stages' ``loras`` parameter). With a converted folder (``model.converted``) a
role is served by the converted file holding what that stage reads (:data:`CONVERTED_PART`). Cache keys
are computed from exactly these (see ``cache_keys``).

Artifacts::

    text-encode -> text.zarr        positive (and, when guided, negative) video + audio contexts
    denoise     -> stage1.zarr      video + audio latents of stage 1
    upscale     -> upscaled.zarr    video latents x2 in space; audio latents carried through
    temporal-upscale -> upscaled_t2.zarr  (with ``temporal_upscale``) video latents x2 in time, F -> 2F-1
                                    latent frames, N -> 2N-1 pixel frames at 2*fps; audio carried through
    refine      -> latents.zarr     video + audio latents after the stage-2 refinement
    decode      -> frames.zarr      RGB frames (video VAE decoder)
    vocode      -> audio.zarr       waveform (audio VAE decoder -> mel -> vocoder)
    export      -> the .mp4         H.264 + AAC

What each pipeline does (as the official ltx_pipelines 1.0.0 runs them):

``distilled`` (the distilled checkpoint, no CFG, so no negative prompt and one transformer pass
per step):
  stage 1 denoises at half the target width and height from pure noise with the 8 fixed distilled
  sigmas [1, .99375, .9875, .98125, .975, .909375, .725, .421875, 0]; the video latent is
  upscaled x2 (un-normalised with the video VAE's per-channel statistics, upsampled, normalised
  again); refine re-noises the upscaled video latent AND the stage-1 audio latent to sigma
  .909375 and runs the 3 remaining distilled sigmas [.909375, .725, .421875, 0] at full size
  with the same checkpoint. Audio is therefore refined too.
``two-stage`` (the dev checkpoint): stage 1 as above at half size but guided (CFG with the
  negative prompt, STG, modality guidance, rescale; per-modality parameters) over ``steps``
  LTX2Scheduler sigmas; x2 upscale; refine as in ``distilled`` (same 3 stage-2 sigmas, no CFG,
  audio and video re-noised to .909375) with the distilled LoRA fused into the checkpoint.
``one-stage`` (the dev checkpoint): guided denoise at full size over ``steps`` LTX2Scheduler
  sigmas; no upscale, no refine: decode and vocode read stage1.zarr.
``temporal_upscale`` (distilled and two-stage; this project's design, no official pipeline does it):
  after the x2 spatial upscale, the temporal x2 upscaler doubles the latent frames (F -> 2F-1) and
  refine runs at 2N-1 frames and 2*fps on them, so the video has twice the frame rate and the same
  first and last frame times; the audio latent is carried unchanged.

Width and height must be multiples of 64 for ``distilled`` and ``two-stage`` (stage 1 runs at half
size, itself a multiple of the VAE's 32), of 32 for ``one-stage``. The stage-1 LTX2Scheduler
sigmas do not depend on resolution (the official pipelines use its default token count).

Noise: the official pipelines draw all noise from one generator seeded once. Here each stage
that draws noise (denoise, refine, and decode when its VAE is timestep-conditioned) derives it
from ``seed`` itself, so ``seed`` is one of its parameters.

Decode tiling ``auto`` resolves here to the official default tiling (512 px tiles, 64 px overlap;
64-frame tiles, 24-frame overlap), with tiling dropped along an axis the output fits into in one
tile. It is resolved in the plan, not in the stage, so the cache key holds what shapes the frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .job import DecodeTiling, Job

__all__ = ["Stage", "plan_stages", "resolve_tiling", "STAGE_VERSIONS", "STAGE_ORDER", "OFFICIAL",
           "DISTILLED_STAGE1_SIGMAS", "DISTILLED_STAGE2_SIGMAS", "ARTIFACTS"]

# Bump a stage's version whenever its output for the same inputs and parameters changes (a bug fix,
# a new precision): every artifact it made, and everything downstream, is then recomputed.
STAGE_VERSIONS: dict[str, int] = {
    "text-encode": 1,
    "denoise": 1,
    "upscale": 1,
    "temporal-upscale": 1,
    "refine": 1,
    "decode": 1,
    "vocode": 1,
    "export": 1,
}
STAGE_ORDER = ("text-encode", "denoise", "upscale", "temporal-upscale", "refine", "decode", "vocode", "export")

# Output artifact of each stage (export writes the job's output path instead).
ARTIFACTS = {
    "text-encode": "text.zarr",
    "denoise": "stage1.zarr",
    "upscale": "upscaled.zarr",
    "temporal-upscale": "upscaled_t2.zarr",
    "refine": "latents.zarr",
    "decode": "frames.zarr",
    "vocode": "audio.zarr",
}

# The distilled model's fixed sigma schedules (values published with the official pipelines; the same
# as stages.sampling.schedules, kept here so planning never imports MLX; a test holds them equal).
DISTILLED_STAGE1_SIGMAS = (1.0, 0.99375, 0.9875, 0.98125, 0.975, 0.909375, 0.725, 0.421875, 0.0)
DISTILLED_STAGE2_SIGMAS = (0.909375, 0.725, 0.421875, 0.0)

_OFFICIAL_TILING = DecodeTiling()  # 512/64 px, 64/24 frames


@dataclass(frozen=True)
class Stage:
    """One step of a job's plan. ``output`` is an artifact name in the work folder, or for export the
    absolute path of the video."""

    name: str
    inputs: tuple[str, ...]
    output: str
    params: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, Path] = field(default_factory=dict)

    @property
    def version(self) -> int:
        return STAGE_VERSIONS[self.name]

    def output_path(self, work_dir: Path) -> Path:
        out = Path(self.output)
        return out if out.is_absolute() else Path(work_dir) / out

    def input_paths(self, work_dir: Path) -> list[Path]:
        return [Path(work_dir) / name for name in self.inputs]


def resolve_tiling(job: Job) -> dict[str, int] | None:
    """The decode tiling actually used: None (untiled) or tile sizes with tiling dropped along
    axes that one tile already covers."""
    if job.tiling == "off":
        return None
    t = _OFFICIAL_TILING if job.tiling == "auto" else job.tiling
    out: dict[str, int] = {}
    if t.spatial_tile is not None and max(job.width, job.height) > t.spatial_tile:
        out.update(spatial_tile=t.spatial_tile, spatial_overlap=t.spatial_overlap)
    if t.temporal_tile is not None and job.output_frames > t.temporal_tile:
        out.update(temporal_tile=t.temporal_tile, temporal_overlap=t.temporal_overlap)
    return out or None


# Written into the params where the job leaves a choice to the checkpoint (its model_version and
# layer count pick it; see job.official_steps / job.official_stg_blocks). A string, not None, so no
# stage can mistake it for "no blocks" or "every block".
OFFICIAL = "official"


def _guidance(job: Job) -> dict[str, Any]:
    out = job.guidance.model_dump(mode="json")
    for stream in out.values():
        if stream["stg_blocks"] is None:
            stream["stg_blocks"] = OFFICIAL
    return out


# The part of a converted folder (`ltx2 convert`) that serves each stage's ``checkpoint`` role.
CONVERTED_PART = {"text-encode": "text_embeddings", "denoise": "transformer", "refine": "transformer",
                  "upscale": "latent_statistics", "temporal-upscale": "latent_statistics",
                  "decode": "video_decoder", "vocode": "audio_decoder"}


def stage_weights(job: Job, tiny_dir: Path | None = None):
    """``files(stage, *roles)`` -> role -> path: the converted file where the job's converted folder holds the
    part, else the official file. User LoRAs come as roles ``lora.1``, ``lora.2``, ... in the job's order."""
    official = job.weight_files(tiny_dir)
    converted = job.converted_roles()

    def files(stage: str, *roles: str) -> dict[str, Path]:
        out = {}
        for role in roles:
            part = CONVERTED_PART[stage] if role == "checkpoint" else role
            out[role] = converted.get(part) or official[role]
        return out
    return files


def lora_roles(job: Job) -> tuple[dict[str, Path], list[float]]:
    """The user LoRAs as weight roles (``lora.N``) and their strengths, for the sampling stages."""
    return {f"lora.{i + 1}": p for i, (p, _) in enumerate(job.loras)}, [s for _, s in job.loras]


def plan_stages(job: Job, tiny_dir: Path | None = None) -> list[Stage]:
    """The ordered stages of ``job``'s pipeline. Needs no artifact and no weight file to exist."""
    files = stage_weights(job, tiny_dir)
    user_loras, strengths = lora_roles(job)
    two_stage = job.pipeline in ("distilled", "two-stage")
    size = dict(width=job.width // 2, height=job.height // 2) if two_stage else dict(width=job.width, height=job.height)
    timing = dict(frames=job.frames, fps=job.fps)

    stages = [Stage(
        "text-encode", (), ARTIFACTS["text-encode"],
        params={"prompt": job.prompt, "negative_prompt": job.negative_prompt if job.guided else None},
        weights=files("text-encode", "gemma", "checkpoint"),
    )]

    if job.pipeline == "distilled":
        schedule: dict[str, Any] = {"kind": "fixed", "sigmas": list(DISTILLED_STAGE1_SIGMAS)}
        guidance = None
    else:
        # steps left out: the official count for the checkpoint's version, resolved by the denoise
        # stage (the checkpoint's identity is part of the key, so the key still pins it).
        schedule = {"kind": "ltx2", "steps": job.steps if job.steps is not None else OFFICIAL}
        guidance = _guidance(job)
    stages.append(Stage(
        "denoise", ("text.zarr",), ARTIFACTS["denoise"],
        params={**size, **timing, "seed": job.seed, "schedule": schedule, "guidance": guidance, "loras": strengths},
        weights={**files("denoise", "checkpoint"), **user_loras},
    ))

    latents = "stage1.zarr"
    if two_stage:
        stages.append(Stage(
            "upscale", ("stage1.zarr",), ARTIFACTS["upscale"],
            params={"scale": 2},
            # the checkpoint provides the video VAE's per-channel statistics (un-/re-normalisation)
            weights=files("upscale", "spatial_upsampler", "checkpoint"),
        ))
        upscaled = "upscaled.zarr"
        if job.temporal_upscale:
            # this project's design (no official pipeline uses the temporal upscaler): x2 in time after x2 in
            # space; refine then works at 2N-1 frames and 2*fps (its positions use fps: timing stays right)
            stages.append(Stage(
                "temporal-upscale", (upscaled,), ARTIFACTS["temporal-upscale"],
                params={"scale": 2},
                weights=files("temporal-upscale", "temporal_upsampler", "checkpoint"),
            ))
            upscaled = ARTIFACTS["temporal-upscale"]
            timing = dict(frames=job.output_frames, fps=job.output_fps)
        refine_weights = {**files("refine", "checkpoint"), **user_loras}
        lora = None
        if job.pipeline == "two-stage":
            refine_weights.update(files("refine", "distilled_lora"))
            lora = {"strength": job.distilled_lora_strength}
        stages.append(Stage(
            "refine", (upscaled, "text.zarr"), ARTIFACTS["refine"],
            params={"width": job.width, "height": job.height, **timing, "seed": job.seed,
                    "schedule": {"kind": "fixed", "sigmas": list(DISTILLED_STAGE2_SIGMAS)},
                    "distilled_lora": lora, "loras": strengths},
            weights=refine_weights,
        ))
        latents = "latents.zarr"

    stages.append(Stage(
        "decode", (latents,), ARTIFACTS["decode"],
        params={"tiling": resolve_tiling(job), "seed": job.seed},
        weights=files("decode", "checkpoint"),
    ))
    stages.append(Stage(
        "vocode", (latents,), ARTIFACTS["vocode"],
        params={},
        weights=files("vocode", "checkpoint"),
    ))
    stages.append(Stage(
        "export", ("frames.zarr", "audio.zarr"), str(job.output),
        params={"output": str(job.output), "crf": job.crf},
    ))
    return stages
