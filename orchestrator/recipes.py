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

Compute precision: every stage that runs a network takes the job's ``compute`` (spec.precision), ``auto`` resolved
here (bfloat16 when MLX's default device is a GPU, float32 on CPU), so each stage's key holds the width it runs at.

Noise: the official pipelines draw all noise from one generator seeded once. Here each stage that
draws noise (denoise, refine, and decode when its VAE is timestep-conditioned) derives it from
``seed`` itself, so ``seed`` is one of its parameters. The stage-1 LTX2Scheduler sigmas do not
depend on resolution (the official pipelines use its default token count).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from ltx2.spec.geometry import OFFICIAL_DECODE_TILING
from ltx2.spec.pipelines import HQ
from ltx2.spec.schedules import DISTILLED_SIGMAS, STAGE2_DISTILLED_SIGMAS

from .job import Job

ParamsOf = Callable[[Job], dict[str, Any]]


# A port's source: a node name (``a|b``: the first of them the job runs), or from the job: the node names of a
# ``many`` port, or the path of a media file (a ``file`` port: the file's content is its key)
Source = Union[str, Callable[[Job], Union[Sequence[str], Path]]]


@dataclass(frozen=True)
class Node:
    """One stage of a recipe. ``inputs``: port -> its source. ``params``: the stage's parameters from the job.
    ``planned``: the memory planner may replace parameters with the stage's memory choices (weights precision,
    decode tiles). ``id``: the node's name where one stage runs several times (one encode per image and size);
    its artifact is then ``<id>.zarr``."""

    stage: str
    inputs: dict[str, Source] = field(default_factory=dict)
    params: ParamsOf = lambda job: {}
    when: Callable[[Job], bool] = lambda job: True
    planned: Callable[[Job], bool] = lambda job: False
    output: Callable[[Job], Path] | None = None  # a file output's path (export, preview); artifacts are named
    # the LoRA files fused into its transformer, with strengths (roles lora.1, lora.2, ...): the job's own
    loras: Callable[[Job], list[tuple[Path, float]]] | None = None
    extra_roles: tuple[str, ...] = ()  # optional weight roles it reads in this recipe (distilled_lora)
    id: str | None = None

    @property
    def name(self) -> str:
        return self.id or self.stage


@dataclass(frozen=True)
class Expand:
    """Nodes the job asks for (one encode per conditioning file and size): ``nodes(job)``, of the ``stages`` named."""

    nodes: Callable[[Job], Iterable[Node]]
    stages: tuple[str, ...]

    def __call__(self, job: Job) -> Iterable[Node]:
        return self.nodes(job)


Entry = Union[Node, Expand]


def stage_order() -> tuple[str, ...]:
    """Every stage a recipe can run, in the order the pipelines run them."""
    names: list[str] = []
    for recipe in RECIPES.values():
        for entry in recipe:
            names += entry.stages if isinstance(entry, Expand) else [entry.stage]
    return tuple(dict.fromkeys(names))


def resolved_compute(job: Job) -> str:
    """The job's ``compute`` with ``auto`` resolved for this machine."""
    if job.compute != "auto":
        return job.compute
    # imported here: MLX (behind models.precision) is slow to import and only planning a job needs it
    from ltx2.models.precision import auto_compute

    return auto_compute()


def _computing(params: ParamsOf) -> ParamsOf:
    """``params`` plus the job's resolved ``compute``: the parameters of a stage that runs a network."""
    return lambda job: {**params(job), "compute": resolved_compute(job)}


def _stage1_size(job: Job) -> dict[str, int]:
    width, height = job.stage1_size  # target / upsampler scale in the two-stage pipelines (a retake: the target)
    return dict(width=width, height=height)


# ----------------------------------------------------------------------------- conditioning
# Each conditioning file is encoded by its own node (its content, the size and the weights key it, so jobs sharing
# a file share the encoding); the denoising nodes read them through their `conditioning` port, and the parameter
# of the same name says how each applies, in the same order (stages.params.CondItem).

def _image_item(img) -> dict[str, Any]:
    return {"use": img.use, "frame": img.frame, "strength": img.strength}


def _conditioning(job: Job, stage: int) -> list[tuple[str, dict[str, Any]]]:
    """(encode node, how it applies) for denoise (``stage`` 1) or refine (2), in the official order: the images
    (re-encoded at each stage's size), then the IC-LoRA reference (stage 1 only: the official second stage is a
    plain refinement), the soundtrack, the retake source."""
    out = [(f"image-encode.s{stage}.{j}", _image_item(img)) for j, img in enumerate(job.images)]
    if job.video is not None and stage == 1:
        out.append(("video-encode.reference", {"use": "reference", "strength": job.video.strength,
                                               "downscale_factor": job.reference_downscale_factor,
                                               "attention_strength": job.video.attention_strength}))
    if job.audio is not None:
        out.append(("audio-encode", {"use": "frozen"}))
    if job.retake is not None:
        out += [("video-encode.source", {"use": "source"}), ("audio-encode.source", {"use": "source"})]
    return out


def _encode_nodes_of(job: Job) -> list[Node]:
    fps, frames = job.fps, job.frames
    nodes = []
    for stage in ((1, 2) if job.two_stage else (1,)):
        w, h = (job.width, job.height) if stage == 2 else tuple(_stage1_size(job).values())
        for j, img in enumerate(job.images):
            nodes.append(Node("image-encode", {"image": lambda job, p=img.path: p},
                              _computing(lambda job, w=w, h=h, img=img: {"width": w, "height": h, "crf": img.crf}),
                              id=f"image-encode.s{stage}.{j}"))
    if job.video is not None:
        w, h = _stage1_size(job).values()
        df = job.reference_downscale_factor
        ports: dict[str, Source] = {"video": lambda job: job.video.path}
        if job.video.mask is not None:
            ports["mask"] = lambda job: job.video.mask
        # the reference's first frames at the stage-1 size / the LoRA's factor, as ICLoraPipeline reads it; its mask
        # at the stage-1 size
        nodes.append(Node("video-encode", ports,
                          _computing(lambda job: {"width": w // df, "height": h // df, "frames": frames, "fps": fps,
                                                  "read": "first_frames", "mask_scale": df}),
                          planned=_always, id="video-encode.reference"))
    if job.audio is not None:
        nodes.append(Node("audio-encode", {"audio": lambda job: job.audio.path},
                          _computing(lambda job: {"frames": frames, "fps": fps, "start": job.audio.start,
                                                  "max_duration": job.audio.max_duration}), id="audio-encode"))
    if job.retake is not None:
        nodes.append(Node("video-encode", {"video": lambda job: job.retake.path},
                          _computing(lambda job: {"width": job.width, "height": job.height, "frames": frames,
                                                  "fps": fps}),
                          planned=_always, id="video-encode.source"))
        nodes.append(Node("audio-encode", {"audio": lambda job: job.retake.path},
                          _computing(lambda job: {"frames": frames, "fps": fps}), id="audio-encode.source"))
    return nodes


_encode_nodes = Expand(_encode_nodes_of, ("image-encode", "video-encode", "audio-encode"))


def _cond_inputs(stage: int) -> Callable[[Job], tuple[str, ...]]:
    return lambda job: tuple(name for name, _ in _conditioning(job, stage))


def _stage1_loras(job: Job) -> list[tuple[Path, float]]:
    """The job's LoRAs, then the IC-LoRA (stage 1 only, as the official ICLoraPipeline)."""
    return list(job.loras) + ([(job.video.lora, job.video.lora_strength)] if job.video is not None else [])


def _job_loras(job: Job) -> list[tuple[Path, float]]:
    return list(job.loras)


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
    cond = _conditioning(job, 1)
    return {**_stage1_size(job), "frames": job.frames, "fps": job.fps, "seed": job.seed, "schedule": schedule,
            "guidance": guidance, "loras": [s for _, s in _stage1_loras(job)], "sampler": HQ.sampler if hq else "euler",
            "distilled_lora": {"strength": HQ.stage1_distilled_lora} if hq else None,
            "conditioning": [item for _, item in cond],
            "retake": None if job.retake is None else {"start": job.retake.start, "end": job.retake.end}}


def refine_params(job: Job) -> dict[str, Any]:
    # after temporal-upscale refine works at 2N-1 frames and 2*fps (its positions use fps: timing stays right)
    return {"width": job.width, "height": job.height, "frames": job.output_frames, "fps": job.output_fps,
            "seed": job.seed, "schedule": {"kind": "fixed", "sigmas": list(STAGE2_DISTILLED_SIGMAS)},
            "distilled_lora": _stage2_lora(job), "loras": job.lora_strengths,
            "sampler": HQ.sampler if job.pipeline == "hq" else "euler",
            "conditioning": [item for _, item in _conditioning(job, 2)]}


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
_TEXT = Node("text-encode", params=_computing(text_params), **_LARGE)
_STAGE1_INPUTS: dict[str, Source] = {"text": "text-encode", "conditioning": _cond_inputs(1)}
_STAGE1 = Node("denoise", _STAGE1_INPUTS, _computing(stage1_params), loras=_stage1_loras, **_LARGE)
_HQ_STAGE1 = Node("denoise", _STAGE1_INPUTS, _computing(stage1_params), loras=_stage1_loras,
                  extra_roles=("distilled_lora",), **_LARGE)


def _outputs(latents: str) -> tuple[Node, ...]:
    """decode, vocode, export and the preview, reading the final latents from node ``latents``."""
    return (
        Node("decode", {"latents": latents}, _computing(lambda job: {"tiling": resolve_tiling(job), "seed": job.seed}),
             planned=lambda job: job.tiling == "auto"),
        # audio-to-video keeps the soundtrack itself (as the official A2V pipeline returns it), not a decode of it
        Node("soundtrack", {"audio": lambda job: job.audio.path},
             lambda job: {"frames": job.frames, "fps": job.fps, "start": job.audio.start},
             when=lambda job: job.audio is not None),
        Node("vocode", {"latents": latents}, _computing(lambda job: {}), when=lambda job: job.audio is None),
        Node("export", {"frames": "decode", "audio": "soundtrack|vocode"},
             lambda job: {"crf": job.crf, "output": str(job.output)}, output=lambda job: job.output),
        Node("preview", {"frames": "decode", "audio": "soundtrack|vocode"}, when=lambda job: job.preview,
             output=lambda job: job.preview_path),
    )


def _two_stage(refine_roles: tuple[str, ...], stage1: Node = _STAGE1) -> tuple[Entry, ...]:
    return (
        _TEXT, _encode_nodes, stage1,
        Node("upscale", {"latents": "denoise"}, _computing(lambda job: {"scale": job.spatial_scale})),
        Node("temporal-upscale", {"latents": "upscale"}, _computing(lambda job: {}),
             when=lambda job: job.temporal_upscale),
        Node("refine", {"latents": "temporal-upscale|upscale", "text": "text-encode", "conditioning": _cond_inputs(2)},
             _computing(refine_params), loras=_job_loras, extra_roles=refine_roles, **_LARGE),
        *_outputs("refine"),
    )


_ONE_STAGE = (_TEXT, _encode_nodes, _STAGE1, *_outputs("denoise"))

RECIPES: dict[str, tuple[Entry, ...]] = {
    "distilled": _two_stage(()),
    "two-stage": _two_stage(("distilled_lora",)),
    "one-stage": _ONE_STAGE,
    "hq": _two_stage(("distilled_lora",), _HQ_STAGE1),
}


def recipe_for(job: Job) -> tuple[Entry, ...]:
    """The job's recipe: its pipeline's, or for a retake the one-stage recipe (the official RetakePipeline renders
    in one stage at the source's size, with the distilled sigmas when the pipeline is distilled, guided else)."""
    return _ONE_STAGE if job.retake is not None else RECIPES[job.pipeline]
