"""The job file: what `ltx2 run job.yaml` renders, validated in full before anything runs.

A job is a YAML mapping checked by the pydantic model :class:`Job`. Every problem in the file is
reported at once, each naming the field, the bad value, the rule it breaks and a fix, e.g.::

    frames: 120 is not 8k+1; use 113 or 121

Unknown fields are errors (a typo such as ``seeed: 3`` must not silently fall back to a
default). Relative paths are taken relative to the folder holding the job file.

Notes on fields whose meaning depends on the pipeline:

- ``steps``: the number of LTX2Scheduler steps of the guided stage 1 (pipelines ``two-stage``,
  ``one-stage`` and ``hq``). Left out, it is the official count for the checkpoint: 40 for LTX-2, 30 for
  LTX-2.3 (:func:`official_steps`, resolved by the denoise stage, which reads the checkpoint); 15 for ``hq``
  (res_2s, two transformer evaluations per step; spec.pipelines).
- ``pipeline: hq``: the official HQ two-stage pipeline: res_2s in both stages, guidance without STG (its own
  defaults, spec.pipelines.HQ, for the fields the job leaves out), the distilled LoRA fused into stage 1 at
  0.25 and stage 2 at 0.5.
- Two-stage sizes follow the spatial upsampler: x2 renders stage 1 at half size (width and height multiples
  of 64); LTX-2.3's x1.5 one at 2/3 (multiples of 96, so stage 1 is a multiple of 64 latent-exact).
  The refine stage of the two-stage pipeline always uses the 3 fixed distilled stage-2 sigmas.
  The ``distilled`` pipeline uses fixed sigma lists for both stages (8 + 3 steps), so giving
  ``steps`` with it is an error rather than being silently ignored.
- ``guidance`` and ``negative_prompt`` only act in the guided pipelines; the distilled pipeline
  runs without CFG, so setting either with it is an error too.
- ``temporal_upscale: true`` (distilled and two-stage only: the refine stage cleans up the
  upscaler's frames) renders ``2*frames-1`` frames at ``2*fps``: the same first and last frame
  times, twice the frame rate. With real weights it needs ``model.temporal_upsampler``.
- ``model: tiny`` (the default) is the small deterministic model generated on first use under
  :func:`default_tiny_dir`; its videos are noise. ``model: tiny-2.3`` is its LTX-2.3 variant (beside it).
  Real weights are named file by file; their checkpoint's metadata says which model version they are.
- Memory sizes (``memory_budget``) are binary: ``16GB`` = ``16GiB`` = 16 * 2**30 bytes, as
  memory is sold; a plain integer is bytes.
- ``compute``: the activation precision of every stage that runs a network (float32 | bfloat16 | float16;
  ``auto``: bfloat16 when MLX's default device is a GPU, float32 on CPU). Separate from how the weights are
  stored (the planner's weights mode); in every such stage's cache key as resolved.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import typing
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

import psutil
import yaml
from pydantic import (AfterValidator, BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError,
                      ValidationInfo, field_validator, model_validator)
from pydantic_core import PydanticCustomError

from ltx2.artifacts_schema.keys import weight_identity
from ltx2.models.tiny import default_tiny_dir, tiny_model_files
from ltx2.models.weights.identify import slot_problem
from ltx2.models.weights.manifest import ManifestError, read_manifest
from ltx2.models.weights.safetensors_file import read_header
from ltx2.spec.errors import BadInputError
from ltx2.spec.geometry import (MAX_FRAMES, MAX_FRAMES_REASON, MAX_SECONDS, MAX_SIDE_PIXELS, MAX_SIDE_REASON,
                                MAX_TIME_REASON, OFFICIAL_DECODE_TILING, duration_seconds, min_frames_for_audio,
                                stage1_side, two_stage_factors, two_stage_side_step)
from ltx2.spec.layout import CONVERTED_ROLES, TINY_FILES, TINY_MODELS
from ltx2.spec.precision import ComputeChoice
from ltx2.spec.versions import official_stg_blocks, official_steps
from ltx2.stages.contract import parse_memory_size
from ltx2.stages.export import Params as ExportParams
from ltx2.stages.latent_upsample import spatial_scale_of
from ltx2.stages.params import AudioGuidance, Guidance, StreamGuidance, VideoGuidance
from ltx2.stages.registry import readers_of

if TYPE_CHECKING:
    from ltx2.stages.media import MediaInfo

__all__ = ["Job", "JobError", "ModelFiles", "LoraFile", "ImageCond", "VideoCond", "AudioCond", "RetakeCond",
           "reference_downscale_factor_of", "CONVERTED_ROLES", "DecodeTiling", "Guidance",
           "VideoGuidance", "AudioGuidance", "StreamGuidance",
           "load_job", "read_job_file", "parse_job", "format_validation_error", "write_problems", "work_dir_holder",
           "parse_memory_size", "default_memory_budget",
           "default_tiny_dir", "tiny_model_files", "official_steps", "official_stg_blocks",
           "PIPELINES", "DEFAULT_NEGATIVE_PROMPT", "TINY_FILES"]

PIPELINES = ("distilled", "two-stage", "one-stage", "hq")
Pipeline = Literal["distilled", "two-stage", "one-stage", "hq"]
TWO_STAGE_PIPELINES = ("distilled", "two-stage", "hq")  # stage 1 at target / upsampler scale, upscale, refine

# Written for this project (the official default is much longer); it names the usual failure modes.
DEFAULT_NEGATIVE_PROMPT = (
    "blurry, out of focus, low contrast, overexposed, underexposed, noisy, flickering, jittery motion, "
    "distorted proportions, deformed hands or faces, extra limbs, compression artifacts, text artifacts, "
    "distorted or muted audio, robotic voice, off-sync audio, background hum"
)

_GiB = 1 << 30
# every job model: unknown fields refused, values frozen, and inf / nan refused wherever a number goes (a NaN
# guidance scale would render black frames minutes later)
_STRICT = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class JobError(BadInputError):
    """A job file that cannot run; ``problems`` holds one line per bad field."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        n = len(problems)
        head = f"{source}: {n} problem{'s' if n != 1 else ''}"
        super().__init__(head + "\n" + "\n".join(f"  - {p}" for p in problems))


def _rule(rule: str, fix: str) -> PydanticCustomError:
    """An error for the formatter: the value is printed before ``rule``, then the fix."""
    return PydanticCustomError("job_rule", "{rule}; {fix}", {"rule": rule, "fix": fix})


def _rule_at(at: str, value: Any, rule: str, fix: str, *, absolute: bool = False) -> PydanticCustomError:
    """A job_rule error about the field ``at`` with its ``value``, raised by a check that reads several fields:
    ``at`` is appended to the location being validated (``images`` + ``1.frame``), or with ``absolute`` replaces
    it (a check on ``retake`` that faults ``pipeline``), so the message still names the one field to change."""
    return PydanticCustomError("job_rule", "{rule}; {fix}",
                               {"rule": rule, "fix": fix, "at": at, "value": value, "absolute": absolute})


def _neighbours(value: int, step: int, offset: int = 0, minimum: int = 1) -> list[int]:
    """The valid values (``step*k + offset`` >= minimum) just below and above ``value``."""
    below = (value - offset) // step * step + offset
    out = [v for v in (below, below + step) if v >= minimum and v != value]
    if not out or out[0] > value:  # value below the smallest valid one
        out = [max(minimum, offset if offset >= minimum else step + offset)]
    return out


def _or(values: list[Any]) -> str:
    return " or ".join(str(v) for v in values)


# ----------------------------------------------------------------------------- memory sizes

def default_memory_budget() -> int:
    """Physical memory less a margin for the OS and other programs (20%, at least 3 GiB)."""
    total = psutil.virtual_memory().total
    return max(total - max(3 * _GiB, total // 5), _GiB)


def _memory_budget(value: Any) -> int:
    try:
        n = parse_memory_size(value)
    except ValueError:
        raise _rule("is not a memory size", 'write e.g. "12GB", "12GiB", "800MB" or a number of bytes') from None
    if n < 256 << 20:
        raise _rule("is below 256 MiB, too little to load any stage", 'give the memory this job may use, e.g. "12GB"')
    return n


# ----------------------------------------------------------------------------- paths

def _base_dir(info: ValidationInfo) -> Path:
    ctx = info.context or {}
    return Path(ctx.get("base_dir") or os.getcwd()).resolve()


def _resolve(path: Path, info: ValidationInfo) -> Path:
    path = Path(os.path.expanduser(str(path)))
    if path.is_absolute():
        return path
    try:
        return (_base_dir(info) / path).resolve()
    except (RuntimeError, OSError) as e:  # a symlink loop (RuntimeError before Python 3.13)
        raise _rule(f"cannot be followed ({e})", "remove the symlink loop, or give another path") from None


def _real(p: Path) -> Path:
    """``p`` with its symlinks followed; a loop is a job_rule error."""
    try:
        return p.resolve(strict=False)
    except (RuntimeError, OSError) as e:
        raise _rule(f"cannot be followed ({e})", "remove the symlink loop, or give another path") from None


def _creatable(p: Path, what: str) -> None:
    """Refuse a path that can never be made: a file where a folder above it must be. Writability is checked
    when a run starts (``write_problems``): a read-only work folder may still serve a finished job."""
    for above in _real(p).parents:
        if above.exists():
            if not above.is_dir():
                raise _rule(f"cannot be made: {above} is a file, not a folder", f"give a path for {what} in a folder")
            return


def _first_existing(p: Path) -> Path:
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


# ----------------------------------------------------------------------------- model files

def _weight_file(what: str, slot: str | None = None):
    """``slot``: the kind of file the field holds (a key of identify.SLOT_WANTS); its header is read to refuse a
    file of another kind (an upsampler given as the checkpoint...) or a truncated one, with the reason."""
    def check(v: Path, info: ValidationInfo) -> Path:
        p = _resolve(v, info)
        where = f"relative paths start at the job file's folder ({_base_dir(info)})"
        if not p.exists():
            raise _rule("does not exist", f"give the path of {what}; {where}")
        if not p.is_file():
            raise _rule("is not a file", f"give the path of {what}")
        if p.suffix != ".safetensors":
            raise _rule("is not a .safetensors file", f"give the path of {what}")
        if slot is not None:
            bad = slot_problem(p, slot, checkpoint=info.data.get("checkpoint") if slot == "lora" else None,
                               readers=readers_of)
            if bad:
                raise _rule(*bad)
        return p
    return check


def _gemma_folder(v: Path, info: ValidationInfo) -> Path:
    p = _resolve(v, info)
    what = "the Gemma-3 text encoder folder (config.json, tokenizer, model-*.safetensors)"
    if not p.exists():
        raise _rule("does not exist", f"give the path of {what}; relative paths start at the job file's folder "
                                      f"({_base_dir(info)})")
    if not p.is_dir():
        raise _rule("is not a folder", f"give the path of {what}")
    if not any(p.glob("*.safetensors")) and not any(p.glob("**/*.safetensors")):
        raise _rule("holds no .safetensors weights", f"give the path of {what}")
    bad = slot_problem(p, "gemma", readers=readers_of)
    if bad:
        raise _rule(*bad)
    return p


def _maybe(check):
    """An AfterValidator for an optional path: ``check`` only when a value is given."""
    return AfterValidator(lambda v, info: None if v is None else check(v, info))


class LoraFile(BaseModel):
    """A user LoRA (a style, a subject...), fused into the transformer of every sampling stage (denoise and
    refine), as the official pipelines apply their ``--lora`` list to both stages."""

    model_config = _STRICT

    path: Annotated[Path, AfterValidator(_weight_file("a LoRA file (*.lora_A.weight / *.lora_B.weight pairs)",
                                                      "lora"))]
    strength: float = 1.0  # the official default (inf and nan refused by _STRICT)


def _converted_folder(v: Path, info: ValidationInfo) -> Path:
    p = _resolve(v, info)
    if not p.is_dir():
        raise _rule("is not a folder" if p.exists() else "does not exist",
                    "give the --out folder of `ltx2 convert`; relative paths start at the job file's folder "
                    f"({_base_dir(info)})")
    try:
        folder = read_manifest(p)
    except ManifestError as e:
        raise _rule(f"cannot be used: {e}", "give the --out folder of a finished `ltx2 convert`") from None
    ckpt = info.data.get("checkpoint")
    made_from = (folder.sources.get("checkpoint") or {}).get("identity")
    if ckpt is not None and made_from is not None:
        if weight_identity(ckpt) != made_from:
            raise _rule(f"was converted from {folder.sources['checkpoint'].get('file')}, not from model.checkpoint "
                        f"({ckpt.name})", "convert this checkpoint, or name the checkpoint it was made from")
    return p


class ModelFiles(BaseModel):
    """Real weights, named file by file (the official releases), and optionally a folder of converted
    files (`ltx2 convert`) that the stages read instead wherever it holds what they need."""

    model_config = _STRICT

    checkpoint: Annotated[Path | None, _maybe(_weight_file(
        "the single-file LTX-2 checkpoint (distilled for pipeline distilled, dev otherwise)", "checkpoint"))] = None
    gemma: Annotated[Path | None, _maybe(_gemma_folder)] = None
    spatial_upsampler: Annotated[Path | None, _maybe(_weight_file("the x2 spatial latent upscaler",
                                                                  "spatial_upsampler"))] = None
    temporal_upsampler: Annotated[Path | None, _maybe(_weight_file("the x2 temporal latent upscaler",
                                                                   "temporal_upsampler"))] = None
    distilled_lora: Annotated[Path | None, _maybe(_weight_file("the distilled LoRA", "lora"))] = None
    distilled_lora_strength: float = Field(1.0, ge=0.0)
    loras: list[LoraFile] = []
    converted: Annotated[Path | None, _maybe(_converted_folder)] = None

    @field_validator("loras")
    @classmethod
    def _loras_fit(cls, v: list[LoraFile], info: ValidationInfo) -> list[LoraFile]:
        ckpt = info.data.get("checkpoint")
        if ckpt is None:
            return v
        for i, lora in enumerate(v):
            bad = slot_problem(lora.path, "lora", checkpoint=ckpt, readers=readers_of)
            if bad:
                raise _rule(f"item {i + 1} ({lora.path.name}) {bad[0]}", bad[1])
        return v

    @model_validator(mode="after")
    def _every_role_covered(self) -> "ModelFiles":
        held = self.converted_roles()
        for slot in ("checkpoint", "gemma"):
            lacking = [r for r in CONVERTED_ROLES[slot] if r not in held]
            if getattr(self, slot) is None and lacking:
                where = f" (model.converted lacks {', '.join(lacking)})" if self.converted else ""
                raise _rule(f"lacks {slot}{where}", f"add {slot}: PATH under model")
        if self.converted is not None:
            mine = [(weight_identity(lora.path), float(lora.strength)) for lora in self.loras]
            alien = [r for r in self.converted_manifest.loras
                     if (r.get("identity"), float(r.get("strength", 1.0))) not in mine]
            if alien:
                names = ", ".join(f"{Path(r.get('file', '?')).name} x {r.get('strength')}" for r in alien)
                raise _rule(f"has a converted transformer with LoRAs fused ({names}) that model.loras does not list, "
                            "so every sampling stage would apply them (a distilled LoRA fused there would spoil "
                            "stage 1)", "list them under model.loras with the same strength, or convert without --lora")
        return self

    @cached_property
    def converted_manifest(self):
        """The converted folder's manifest (models/weights/manifest.py), read once; None without a folder."""
        return read_manifest(self.converted) if self.converted is not None else None

    def converted_roles(self) -> dict[str, Path]:
        """Role -> converted file, from the converted folder's manifest (empty without one)."""
        return dict(self.converted_manifest.roles) if self.converted is not None else {}

    def files(self) -> dict[str, Path]:
        """The official files named (role -> path); the converted folder is not among them."""
        return {k: getattr(self, k) for k in ("checkpoint", "gemma", "spatial_upsampler", "temporal_upsampler",
                                              "distilled_lora") if getattr(self, k) is not None}


def _tiny_name(v: str) -> str:
    if v not in TINY_MODELS:
        raise _rule("is not a model name this program knows",
                    "write `model: tiny` (or `tiny-2.3`, its LTX-2.3 variant) or give the weight files (checkpoint, "
                    "gemma, spatial_upsampler, distilled_lora)")
    return v


def _model_kind(v: Any) -> str | None:
    if isinstance(v, str):
        return "name"
    if isinstance(v, (dict, ModelFiles)):
        return "files"
    return None


ModelSpec = Annotated[
    Union[Annotated[Annotated[str, AfterValidator(_tiny_name)], Tag("name")], Annotated[ModelFiles, Tag("files")]],
    Discriminator(_model_kind, custom_error_type="job_rule",
                  custom_error_message="is neither `tiny` nor a mapping of weight files; write `model: tiny` or "
                                       "give checkpoint, gemma, spatial_upsampler and distilled_lora paths"),
]


# ----------------------------------------------------------------------------- decode tiling

class DecodeTiling(BaseModel):
    """Tiled VAE decode (bounded memory). A tile of None turns tiling off along that axis."""

    model_config = _STRICT

    spatial_tile: int | None = OFFICIAL_DECODE_TILING["spatial_tile"]          # pixels
    spatial_overlap: int = OFFICIAL_DECODE_TILING["spatial_overlap"]           # pixels
    temporal_tile: int | None = OFFICIAL_DECODE_TILING["temporal_tile"]        # frames
    temporal_overlap: int = OFFICIAL_DECODE_TILING["temporal_overlap"]         # frames

    @field_validator("spatial_tile")
    @classmethod
    def _spatial_tile(cls, v: int | None) -> int | None:
        if v is not None and (v < 64 or v % 32):
            raise _rule("is not a multiple of 32 of at least 64", f"use {_or(_neighbours(v, 32, 0, 64))}")
        return v

    @field_validator("spatial_overlap")
    @classmethod
    def _spatial_overlap(cls, v: int, info: ValidationInfo) -> int:
        if v < 0 or v % 32:
            raise _rule("is not a multiple of 32", f"use {_or(_neighbours(v, 32, 0, 0))}")
        tile = info.data.get("spatial_tile")
        if tile is not None and v >= tile:
            raise _rule(f"is not smaller than spatial_tile ({tile})", f"use at most {tile - 32}")
        return v

    @field_validator("temporal_tile")
    @classmethod
    def _temporal_tile(cls, v: int | None) -> int | None:
        if v is not None and (v < 16 or v % 8):
            raise _rule("is not a multiple of 8 of at least 16", f"use {_or(_neighbours(v, 8, 0, 16))}")
        return v

    @field_validator("temporal_overlap")
    @classmethod
    def _temporal_overlap(cls, v: int, info: ValidationInfo) -> int:
        if v < 0 or v % 8:
            raise _rule("is not a multiple of 8", f"use {_or(_neighbours(v, 8, 0, 0))}")
        tile = info.data.get("temporal_tile")
        if tile is not None and v >= tile:
            raise _rule(f"is not smaller than temporal_tile ({tile})", f"use at most {tile - 8}")
        return v


def _tiling_word(v: str) -> str:
    if v not in ("auto", "off"):
        raise _rule("is not a tiling mode", "write `auto`, `off`, or a mapping with spatial_tile, spatial_overlap, "
                                            "temporal_tile, temporal_overlap")
    return v


TilingSpec = Annotated[
    Union[Annotated[Annotated[str, AfterValidator(_tiling_word)], Tag("word")],
          Annotated[DecodeTiling, Tag("tiles")]],
    Discriminator(lambda v: "word" if isinstance(v, str) else "tiles" if isinstance(v, (dict, DecodeTiling))
                  else None, custom_error_type="job_rule",
                  custom_error_message="is not a tiling; write `auto`, `off`, or a mapping with spatial_tile, "
                                       "spatial_overlap, temporal_tile, temporal_overlap"),
]


# ----------------------------------------------------------------------------- conditioning media

# The video VAE compresses space 32x and time 8x after the first frame (spec.geometry).
_SPACE, _TIME = 32, 8
# Seconds a soundtrack may fall short of the clip and still count as covering it: a file cut at the clip's exact
# length loses a fraction of a sample to rounding.
_AUDIO_SLACK_S = 1e-3


def _frames_down(n: int) -> int:
    """The most frames of the form 8k+1 in ``n`` (n >= 1)."""
    return (n - 1) // _TIME * _TIME + 1


def _media(p: Path, info: ValidationInfo, what: str) -> MediaInfo:
    """What ``p`` holds (stages.media.probe: streams, size, frames, duration), probed once per job read; a file
    PyAV / Pillow cannot open is a job_rule error with the reason."""
    cache = info.context.setdefault("media", {}) if isinstance(info.context, dict) else {}
    if p not in cache:
        from ltx2.stages.media import probe  # lazy: PyAV is slow to import and `ltx2 run` must start fast

        try:
            cache[p] = probe(p)
        except (BadInputError, OSError) as e:
            # probe says "<path>: <reason>; <its fix>": the field names the path and gives its own fix
            reason = str(e).replace(f"{p}: ", "").rsplit("; ", 1)[0].strip() or type(e).__name__
            raise _rule(f"cannot be read as {what} ({reason})", f"give {what} that PyAV or Pillow can open") from None
    return cache[p]


def _media_file(what: str, needs: tuple[str, ...]):
    """A conditioning file: exists, is a readable file, and holds what ``needs`` names ("image": a still picture,
    "video": a video stream, "audio": an audio stream)."""
    def check(v: Path, info: ValidationInfo) -> Path:
        p = _resolve(v, info)
        if not p.exists():
            raise _rule("does not exist", f"give the path of {what}; relative paths start at the job file's folder "
                                          f"({_base_dir(info)})")
        if not p.is_file():
            raise _rule("is not a file", f"give the path of {what}")
        if not os.access(p, os.R_OK):
            raise _rule("is not readable", f"make it readable, or give the path of another copy of {what}")
        m = _media(p, info, what)
        if "image" in needs and m.kind != "image":
            raise _rule(f"is {'an' if m.kind[0] in 'aeiou' else 'a'} {m.kind} file, not a still image",
                        f"give the path of {what}")
        if "video" in needs and not m.has_video:
            raise _rule("has no video stream", f"give the path of {what}")
        if "audio" in needs and not m.has_audio:
            raise _rule("has no audio stream", f"give the path of {what}")
        return p
    return check


def _factor(raw: Any) -> int | None:
    """A ``reference_downscale_factor`` metadata value as a whole number >= 1 (None when it is not one)."""
    try:
        factor = int(str(raw).strip())
    except ValueError:
        return None
    return factor if factor >= 1 else None


def reference_downscale_factor_of(lora: Path) -> int:
    """The IC-LoRA's ``reference_downscale_factor`` (its safetensors metadata, header only; 1 when absent): it was
    trained on reference videos at the target size / this factor."""
    raw = read_header(lora).metadata.get("reference_downscale_factor", "1")
    factor = _factor(raw)
    if factor is None:
        raise BadInputError(f"{lora}: its metadata reference_downscale_factor {raw!r} is not a whole number >= 1; "
                            "give an IC-LoRA with a valid one")
    return factor


def _ic_lora_file(v: Path, info: ValidationInfo) -> Path:
    what = "an IC-LoRA file (*.lora_A.weight / *.lora_B.weight pairs)"
    p = _weight_file(what, "lora")(v, info)
    raw = read_header(p).metadata.get("reference_downscale_factor", "1")
    if _factor(raw) is None:
        raise _rule(f"is a LoRA, but its metadata reference_downscale_factor {raw!r} is not a whole number >= 1",
                    f"give {what} with a valid reference_downscale_factor")
    return p


class ImageCond(BaseModel):
    """An image the video starts from, passes through or ends on: the official ``--image PATH FRAME STRENGTH
    [CRF]``. ``frame`` is a pixel frame of the rendered clip. ``mode``: ``auto`` does what the official pipelines
    do (frame 0 replaces the first latent frame, any other frame is appended as a keyframe); ``replace`` puts the
    image in latent frame ``frame // 8`` (VideoConditionByLatentIndex: ``frame`` a multiple of 8); ``keyframe``
    always appends it (VideoConditionByKeyframeIndex, as the official KeyframeInterpolationPipeline does)."""

    model_config = _STRICT

    path: Annotated[Path, AfterValidator(_media_file("a still image (PNG, JPEG...)", ("image",)))]
    frame: int = Field(0, ge=0)
    strength: float = Field(1.0, ge=0.0, le=1.0)  # 1: kept as given; 0: fully regenerated
    crf: int | None = Field(None, ge=0, le=51)  # the H.264 round trip the model was trained with; None: the model's
    mode: Literal["auto", "replace", "keyframe"] = "auto"

    @model_validator(mode="after")
    def _on_the_latent_grid(self) -> "ImageCond":
        if self.mode == "replace" and self.frame % _TIME:
            raise _rule_at("frame", self.frame,
                           "is not a multiple of 8, which mode replace needs (it replaces latent frame frame // 8)",
                           f"use {_or(_neighbours(self.frame, _TIME, 0, 0))}, or mode keyframe (any frame)")
        return self

    @property
    def use(self) -> Literal["replace", "keyframe"]:
        """How it applies, ``auto`` resolved as the official pipelines do."""
        if self.mode == "auto":
            return "replace" if self.frame == 0 else "keyframe"
        return self.mode


class VideoCond(BaseModel):
    """An IC-LoRA video-to-video reference: the official ICLoraPipeline's ``--video-conditioning PATH STRENGTH``
    with the IC-LoRA in ``--lora``, and ``--conditioning-attention-mask MASK ATTENTION_STRENGTH``. The reference is
    encoded at the stage-1 size / the LoRA's ``reference_downscale_factor`` and appended to the video tokens."""

    model_config = _STRICT

    path: Annotated[Path, AfterValidator(_media_file("a reference video", ("video",)))]
    lora: Annotated[Path, AfterValidator(_ic_lora_file)]
    lora_strength: float = 1.0  # the official LoRA default
    strength: float = Field(1.0, ge=0.0, le=1.0)
    # grayscale video: per-region weight of the reference in attention (0 ignores it there, 1 full influence)
    mask: Annotated[Path | None, _maybe(_media_file("a grayscale mask video", ("video",)))] = None
    attention_strength: float = Field(1.0, ge=0.0, le=1.0)  # multiplies the mask (the official mask STRENGTH)

    @property
    def reference_downscale_factor(self) -> int:
        return reference_downscale_factor_of(self.lora)


class AudioCond(BaseModel):
    """A soundtrack the video follows, kept as given (audio-to-video): the official A2VidPipelineTwoStage's
    ``--audio-path --audio-start-time --audio-max-duration``. Left out, max_duration is the clip's length."""

    model_config = _STRICT

    path: Annotated[Path, AfterValidator(_media_file("a sound file (WAV, FLAC, MP3, or a video with sound)",
                                                     ("audio",)))]
    start: float = Field(0.0, ge=0.0)  # seconds into the file
    max_duration: float | None = Field(None, gt=0.0)

    @model_validator(mode="after")
    def _start_inside(self, info: ValidationInfo) -> "AudioCond":
        length = _media(self.path, info, "a sound file").duration_s
        if length is not None and self.start >= length:
            raise _rule_at("start", self.start, f"is at or after the end of {self.path.name} ({length:.3f} s)",
                           f"use a start below {length:.3f}")
        return self


class RetakeCond(BaseModel):
    """Regenerate the time window [start, end) seconds of a clip and keep the rest: the official RetakePipeline's
    ``--video-path --start-time --end-time``. The clip needs a video and an audio stream."""

    model_config = _STRICT

    path: Annotated[Path, AfterValidator(_media_file("the clip to retake (a video with sound)", ("video", "audio")))]
    start: float = Field(ge=0.0)
    end: float

    @model_validator(mode="after")
    def _window(self, info: ValidationInfo) -> "RetakeCond":
        if self.end <= self.start:
            raise _rule_at("end", self.end, f"is not after start ({self.start:g}): the window is empty",
                           "give an end later than start")
        length = _media(self.path, info, "the clip to retake").duration_s
        if length is not None and self.end > length + _AUDIO_SLACK_S:
            raise _rule_at("end", self.end, f"is beyond the end of {self.path.name} ({length:.3f} s)",
                           f"use an end of at most {length:.3f}")
        return self


def _job_checkpoint(info: ValidationInfo) -> Path | None:
    """The checkpoint an IC-LoRA must fit: the job's model.checkpoint, or the tiny model's when it is made already
    (otherwise it is checked when the denoise stage loads it)."""
    model = info.data.get("model")
    if isinstance(model, ModelFiles):
        return model.checkpoint
    if isinstance(model, str) and model in TINY_MODELS:
        path = tiny_model_files(None, model)["checkpoint"]
        return path if path.is_file() else None
    return None


def _no_temporal_upscale(info: ValidationInfo) -> None:
    """Conditioning with temporal_upscale is refused (said once, whichever fields run into it)."""
    if info.data.get("temporal_upscale"):
        # the upscaler doubles the frames after stage 1: the items' frame positions would no longer hold in refine
        raise _rule_at("temporal_upscale", True, "cannot be combined with images, video, audio or retake (no "
                       "official pipeline does: the temporal upscaler's new frames would not keep the conditioning's "
                       "frame positions)", "remove temporal_upscale, or the conditioning", absolute=True)


def _sides_for_reference(side: int, step: int, stage1, factor: int) -> list[int]:
    """Target sides near ``side`` (multiples of ``step``) whose stage-1 side, divided by ``factor``, is a whole
    multiple of 32."""
    def fits(s: int) -> bool:
        s1 = stage1(s)
        return s1 % factor == 0 and (s1 // factor) % _SPACE == 0
    below = next((s for s in range(side - side % step, 0, -step) if fits(s)), None)
    above = next((s for s in range(side - side % step + step, side + 64 * step, step) if fits(s)), None)
    return [s for s in (below, above) if s is not None and s != side]


# ----------------------------------------------------------------------------- the job

class Job(BaseModel):
    """One render. Field order matters: validators of later fields read ``pipeline`` from earlier ones."""

    model_config = _STRICT

    pipeline: Pipeline = "distilled"
    prompt: str = Field(min_length=1)
    negative_prompt: str = DEFAULT_NEGATIVE_PROMPT
    width: int = 768
    height: int = 512
    frames: int = 121
    fps: float = 24.0
    seed: int = Field(42, ge=0, lt=1 << 63)
    steps: int | None = None
    guidance: Guidance = Guidance()
    model: ModelSpec = "tiny"
    # double the frame rate: F frames at fps -> 2F-1 frames at 2*fps, same duration, by the temporal latent
    # upscaler after the spatial one (this project's design: no official pipeline uses that upscaler)
    temporal_upscale: bool = False
    tiling: TilingSpec = "auto"
    crf: int = Field(ExportParams.model_fields["crf"].default, ge=0, le=51)  # x264 quality (see the export stage)
    preview: bool = True  # write <output>.preview.png: a contact sheet of frames, the waveform and spectrogram
    # relative paths start at the job file's folder; defaults follow the job file's name (<name>.mp4)
    output: Path = Field(Path("output.mp4"), validate_default=True)
    work_dir: Path = Field(Path("work"), validate_default=True)
    store: Path | None = None  # the shared artifact store; left out: $LTX2_STORE, else ~/.cache/ltx2/store
    memory_budget: Annotated[int, Field(default_factory=default_memory_budget)]
    # activation precision of every stage that runs a network (spec.precision); auto: bfloat16 on a GPU (Metal,
    # CUDA), float32 on CPU, resolved when the job is planned (orchestrator/recipes.py), so the keys hold the width
    compute: ComputeChoice = "auto"
    # conditioning (official flags in the README); validated last, against the clip's size, length and model
    images: list[ImageCond] = []
    video: VideoCond | None = None
    audio: AudioCond | None = None
    retake: RetakeCond | None = None

    @model_validator(mode="before")
    @classmethod
    def _defaults_from_job_name(cls, data: Any, info: ValidationInfo) -> Any:
        # Jobs in one folder must not share an output or a work folder: default both to the job's name.
        name = (info.context or {}).get("job_name")
        if isinstance(data, dict) and name:  # without a job file, the field defaults apply
            data = dict(data)
            data.setdefault("output", f"{name}.mp4")
            data.setdefault("work_dir", f"{name}.work")
        return data

    @model_validator(mode="before")
    @classmethod
    def _upsampler_scale(cls, data: Any, info: ValidationInfo) -> Any:
        # The size rule of a two-stage job follows the spatial upsampler's scale, a fact of model.spatial_upsampler
        # (validated after width and height): read it from the file now, for _size. Unreadable: x2 is assumed here
        # and the model field reports the file.
        if isinstance(info.context, dict) and isinstance(data, dict) and isinstance(data.get("model"), dict):
            path = data["model"].get("spatial_upsampler")
            try:
                info.context["spatial_scale"] = spatial_scale_of(_resolve(Path(path), info)) if path else 2.0
            except Exception:  # noqa: BLE001 - any unreadable file: the model field's own check says why
                info.context["spatial_scale"] = 2.0
        return data

    @model_validator(mode="before")
    @classmethod
    def _retake_renders_the_source(cls, data: Any, info: ValidationInfo) -> Any:
        # The official RetakePipeline renders at the source's size, length and rate: width, height, frames and fps
        # the job leaves out come from retake.path (frames snapped down to 8k+1). A source that cannot be read
        # fills nothing: retake.path's own check says why.
        if not (isinstance(data, dict) and isinstance(data.get("retake"), dict) and isinstance(info.context, dict)):
            return data
        info.context["retake_given"] = {k for k in ("width", "height", "frames", "fps") if k in data}
        path = data["retake"].get("path")
        try:
            src = _media(_resolve(Path(path), info), info, "the clip to retake")
        except (TypeError, PydanticCustomError):
            return data
        if not src.has_video:
            return data
        fill: dict[str, Any] = {}
        if all(side and side % _SPACE == 0 and side <= MAX_SIDE_PIXELS for side in (src.width, src.height)):
            fill.update(width=src.width, height=src.height)
        if src.frames and _frames_down(src.frames) <= MAX_FRAMES:
            fill["frames"] = _frames_down(src.frames)
        if src.fps and src.fps > 0:
            fill["fps"] = src.fps
        return {**fill, **data}

    @field_validator("width", "height")
    @classmethod
    def _size(cls, v: int, info: ValidationInfo) -> int:
        pipeline = info.data.get("pipeline")
        scale = float((info.context or {}).get("spatial_scale", 2.0))
        if "retake_given" in (info.context or {}):
            # a retake is one stage at the full size, whatever the pipeline (two-stage ones are refused by retake)
            step, why = _SPACE, " (a retake renders in one stage; the video VAE compresses space 32x)"
        elif pipeline in TWO_STAGE_PIPELINES and scale != 2.0:
            step, (up, down) = two_stage_side_step(scale), two_stage_factors(scale)
            why = (f" (pipeline {pipeline} renders stage 1 at {down}/{up} of the size for the x{scale:g} spatial "
                   f"upsampler, itself a multiple of {step * down // up})")
        elif pipeline in TWO_STAGE_PIPELINES:
            step, why = 64, f" (pipeline {pipeline} renders stage 1 at half size, itself a multiple of 32)"
        else:
            step, why = 32, " (the video VAE compresses space 32x)"
        if v < step or v % step:
            raise _rule(f"is not a positive multiple of {step}{why}", f"use {_or(_neighbours(v, step, 0, step))}")
        if v > MAX_SIDE_PIXELS:
            raise _rule(f"is above {MAX_SIDE_PIXELS} px, {MAX_SIDE_REASON}", f"use at most {MAX_SIDE_PIXELS}")
        return v

    @field_validator("frames")
    @classmethod
    def _frames(cls, v: int) -> int:
        if v < 1 or (v - 1) % 8:
            raise _rule("is not 8k+1 (the video VAE compresses time 8x after the first frame)",
                        f"use {_or(_neighbours(v, 8, 1, 1))}")
        if v > MAX_FRAMES:
            raise _rule(f"is above {MAX_FRAMES} frames ({MAX_FRAMES_REASON})", f"use at most {MAX_FRAMES}")
        return v

    @field_validator("fps")
    @classmethod
    def _fps(cls, v: float, info: ValidationInfo) -> float:
        if not (v > 0 and math.isfinite(v)):
            raise _rule("is not a positive frame rate", "use e.g. 24 or 25")
        frames = info.data.get("frames")
        if frames is None:  # frames itself is refused
            return v
        if duration_seconds(frames, v) > MAX_SECONDS:
            raise _rule(f"makes {frames} frames last {duration_seconds(frames, v):g} s, beyond {MAX_SECONDS:g} s "
                        f"({MAX_TIME_REASON})", f"use fps >= {math.ceil((frames - 1) / MAX_SECONDS)}, or fewer frames")
        least = min_frames_for_audio(v)
        if least is None or frames < least:
            fix = f"use frames >= {least} or a lower fps" if least else "use a lower fps (e.g. 24)"
            raise _rule(f"makes {frames} frame{'s' if frames != 1 else ''} too short for one audio latent frame "
                        "(1/25 s of sound)", fix)
        return v

    @field_validator("steps")
    @classmethod
    def _steps(cls, v: int | None, info: ValidationInfo) -> int | None:
        if v is None:
            return v
        if info.data.get("pipeline") == "distilled":
            raise _rule("does not apply to pipeline distilled (it uses fixed 8 + 3 step sigma lists)",
                        "remove steps, or use pipeline two-stage or one-stage")
        if v < 1:
            raise _rule("is not a positive number of steps", "use e.g. 40 (LTX-2) or 30 (LTX-2.3)")
        return v

    @field_validator("negative_prompt", "guidance")
    @classmethod
    def _guided_only(cls, v: Any, info: ValidationInfo) -> Any:
        # Runs only when the field is given (defaults are not validated).
        if info.data.get("pipeline") == "distilled":
            raise _rule("does not apply to pipeline distilled (it runs without CFG)",
                        f"remove {info.field_name}, or use pipeline two-stage or one-stage")
        return v

    @field_validator("model")
    @classmethod
    def _model_fits_pipeline(cls, v: Any, info: ValidationInfo) -> Any:
        if not isinstance(v, ModelFiles):
            return v
        pipeline = info.data.get("pipeline")
        need = {"distilled": ["spatial_upsampler"], "two-stage": ["spatial_upsampler", "distilled_lora"],
                "hq": ["spatial_upsampler", "distilled_lora"]}
        if "retake_given" in (info.context or {}):
            need = {}  # one stage at full size: no upscale, no refine
        held = v.converted_roles()
        missing = [k for k in need.get(pipeline, []) if getattr(v, k) is None and k not in held]
        if missing:
            raise _rule(f"lacks {', '.join(missing)}, which pipeline {pipeline} needs",
                        f"add {' and '.join(f'{k}: PATH' for k in missing)} under model")
        return v

    @field_validator("temporal_upscale")
    @classmethod
    def _temporal_upscale(cls, v: bool, info: ValidationInfo) -> bool:
        if not v:
            return v
        pipeline = info.data.get("pipeline")
        if pipeline == "one-stage":
            # the upscaler's frames are only cleaned up by the stage-2 refine that one-stage lacks
            raise _rule("does not apply to pipeline one-stage (it has no refine stage to clean up the temporal "
                        "upscaler's output)", "remove temporal_upscale, or use pipeline distilled or two-stage")
        model = info.data.get("model")
        if isinstance(model, ModelFiles) and model.temporal_upsampler is None \
                and "temporal_upsampler" not in model.converted_roles():
            raise _rule("needs the temporal x2 latent upscaler, but model has no temporal_upsampler",
                        "add temporal_upsampler: PATH (ltx-2-temporal-upscaler-x2-1.0.safetensors) under model, "
                        "or remove temporal_upscale")
        return v

    @field_validator("tiling", mode="before")
    @classmethod
    def _tiling_off(cls, v: Any) -> Any:
        # YAML 1.1 reads an unquoted `off` (or `no`) as false: it means what the docs say, no tiling
        if v is True:
            raise _rule("(YAML reads an unquoted on / yes / true so) is not a tiling mode",
                        "write `auto`, `off`, or a mapping with spatial_tile, spatial_overlap, temporal_tile, "
                        "temporal_overlap")
        return "off" if v is False else v

    @field_validator("output")
    @classmethod
    def _output(cls, v: Path, info: ValidationInfo) -> Path:
        p = _resolve(v, info)
        if p.suffix.lower() != ".mp4":
            raise _rule("is not an .mp4 path (the export writes H.264 + AAC in MP4)", f"use {p.with_suffix('.mp4')}")
        if _real(p).is_dir():
            raise _rule("is a folder", "give a file path ending in .mp4")
        _creatable(p, "the video")
        return p

    @field_validator("work_dir", "store")
    @classmethod
    def _work_dir(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        if v is None:
            return v
        p = _resolve(v, info)
        real = _real(p)
        if real.exists() and not real.is_dir():
            raise _rule("exists and is not a folder", "give a folder for the stage artifacts")
        _creatable(p, "the stage artifacts")
        return p

    @field_validator("memory_budget", mode="before")
    @classmethod
    def _memory(cls, v: Any) -> int:
        return _memory_budget(v)

    @field_validator("images")
    @classmethod
    def _images_in_the_clip(cls, v: list[ImageCond], info: ValidationInfo) -> list[ImageCond]:
        if not v:
            return v
        _no_temporal_upscale(info)
        frames = info.data.get("frames")
        if frames is None:  # frames itself is refused
            return v
        first: dict[int, int] = {}
        for i, image in enumerate(v):
            if image.frame > frames - 1:
                grid = " that is a multiple of 8 (mode replace)" if image.mode == "replace" else ""
                raise _rule_at(f"{i}.frame", image.frame, f"is beyond the clip's last frame ({frames - 1}: frames is "
                               f"{frames})", f"use a frame in 0..{frames - 1}{grid}, or more frames")
            if image.frame in first:
                raise _rule_at(f"{i}.frame", image.frame, f"is also the frame of images.{first[image.frame]}: two "
                               "images on one frame", "give each image its own frame, or remove one")
            first[image.frame] = i
        return v

    @field_validator("video")
    @classmethod
    def _reference_fits(cls, v: VideoCond | None, info: ValidationInfo) -> VideoCond | None:
        if v is None:
            return v
        _no_temporal_upscale(info)
        ckpt = _job_checkpoint(info)
        if ckpt is not None:
            bad = slot_problem(v.lora, "lora", checkpoint=ckpt, readers=readers_of)
            if bad:
                raise _rule_at("lora", str(v.lora), *bad)
        pipeline, width, height = info.data.get("pipeline"), info.data.get("width"), info.data.get("height")
        if pipeline is None or width is None or height is None:
            return v
        factor = v.reference_downscale_factor
        scale = float((info.context or {}).get("spatial_scale", 2.0))
        two = pipeline in TWO_STAGE_PIPELINES and "retake_given" not in (info.context or {})
        step = two_stage_side_step(scale) if two else _SPACE
        stage1 = (lambda s: stage1_side(s, scale)) if two else (lambda s: s)
        for name, side in (("width", width), ("height", height)):
            s1 = stage1(side)
            if s1 % factor or (s1 // factor) % _SPACE:
                where = f"stage 1 renders it at {s1} px, so the" if two else "the"
                ref = f"{s1 / factor:g}"
                raise _rule_at(name, side, f"does not fit the IC-LoRA {v.lora.name} (reference_downscale_factor "
                               f"{factor}): {where} reference is encoded at {s1} / {factor} = {ref} px, not a "
                               "multiple of 32 (the video VAE compresses space 32x)",
                               f"use {_or(_sides_for_reference(side, step, stage1, factor))}", absolute=True)
        return v

    @field_validator("audio")
    @classmethod
    def _audio_covers_the_clip(cls, v: AudioCond | None, info: ValidationInfo) -> AudioCond | None:
        if v is None:
            return v
        _no_temporal_upscale(info)
        if info.data.get("video") is not None:
            raise _rule_at("path", v.path.name, "cannot be combined with video (an IC-LoRA reference): no official "
                           "pipeline keeps a soundtrack while following a reference video (ICLoraPipeline takes no "
                           "audio, A2VidPipelineTwoStage no reference video)", "remove audio or video")
        frames, fps = info.data.get("frames"), info.data.get("fps")
        length = _media(v.path, info, "a sound file").duration_s
        if frames is None or fps is None or length is None:
            return v
        clip = frames / fps
        needed = f"the clip ({frames} frames at {fps:g} fps = {clip:.3f} s)"
        if v.max_duration is not None and v.max_duration < clip - _AUDIO_SLACK_S:
            raise _rule_at("max_duration", v.max_duration, f"s is shorter than {needed}: the soundtrack must cover "
                           "the clip", f"use max_duration >= {math.ceil(clip * 1000) / 1000:g}, or leave it out")
        have = length - v.start
        if have < clip - _AUDIO_SLACK_S:
            most = _frames_down(math.floor(have * fps)) if have * fps >= 1 else 0
            fewer = f", or frames <= {most}" if most >= 1 else ""
            at, value = ("start", v.start) if v.start > 0 else ("path", v.path.name)
            raise _rule_at(at, value, f"leaves {have:.3f} s of sound in {v.path.name} ({length:.3f} s long), "
                           f"shorter than {needed}: the soundtrack must cover the clip",
                           f"give a longer sound file{', an earlier start' if v.start > 0 else ''}{fewer}")
        return v

    @field_validator("retake")
    @classmethod
    def _retake_alone_in_one_stage(cls, v: RetakeCond | None, info: ValidationInfo) -> RetakeCond | None:
        if v is None:
            return v
        pipeline = info.data.get("pipeline")
        if pipeline not in (None, "distilled", "one-stage"):
            raise _rule_at("pipeline", pipeline, "does not apply to retake (the official RetakePipeline is one stage "
                           "at the source's size)", "use pipeline distilled (distilled sigmas) or one-stage (guided)",
                           absolute=True)
        _no_temporal_upscale(info)
        others = [k for k in ("images", "video", "audio") if info.data.get(k)]
        if others:
            raise _rule_at("path", v.path.name, f"cannot be combined with {' and '.join(others)}: no official pipeline "
                           "does (RetakePipeline takes only the source clip)",
                           f"remove {' and '.join(others)}, or retake without them")
        src = _media(v.path, info, "the clip to retake")
        given = (info.context or {}).get("retake_given", set())
        if not {"width", "height"} <= given and not all(
                side and side % _SPACE == 0 and side <= MAX_SIDE_PIXELS for side in (src.width, src.height)):
            raise _rule_at("path", v.path.name, f"is {src.width}x{src.height} px, not multiples of 32 up to "
                           f"{MAX_SIDE_PIXELS} (the video VAE compresses space 32x), so a retake cannot render at "
                           "its size", "give width and height (multiples of 32) for it to be resized to")
        frames, fps = info.data.get("frames"), info.data.get("fps")
        if frames is None or fps is None:
            return v
        if "frames" in given and src.frames and frames > src.frames:
            what = f"{v.path.name} ({src.width}x{src.height} px, {src.frames} frames at {src.fps or 0:g} fps)"
            raise _rule_at("frames", frames, f"is more than retake.path {what} has",
                           f"use at most {_frames_down(src.frames)}, or leave frames out (the source's length)",
                           absolute=True)
        if "frames" not in given and not src.frames:
            raise _rule_at("path", v.path.name, "does not say how many frames it has",
                           "give frames (8k+1) to retake that many")
        if "frames" not in given and _frames_down(src.frames) > MAX_FRAMES:
            raise _rule_at("path", v.path.name, f"has {src.frames} frames, beyond {MAX_FRAMES} ({MAX_FRAMES_REASON})",
                           f"give frames (at most {MAX_FRAMES}) to retake its first frames")
        clip = frames / fps
        if v.start >= clip:
            raise _rule_at("start", v.start, f"is at or after the end of the clip rendered ({frames} frames at "
                           f"{fps:g} fps = {clip:.3f} s)", f"use a start below {clip:.3f}, or more frames")
        return v

    # -- derived facts the graph and the stages use

    @property
    def guided(self) -> bool:
        return self.pipeline != "distilled"

    @property
    def two_stage(self) -> bool:
        """Stage 1 at the upsampler's scale, upscale, refine; a retake is one stage at full size in any pipeline."""
        return self.pipeline in TWO_STAGE_PIPELINES and self.retake is None

    @property
    def conditioned(self) -> bool:
        """Renders from more than the prompt: images, an IC-LoRA reference, a soundtrack or a retake."""
        return bool(self.images) or any(c is not None for c in (self.video, self.audio, self.retake))

    @property
    def reference_downscale_factor(self) -> int:
        """The IC-LoRA's reference_downscale_factor (header metadata; 1 without one or without an IC-LoRA): the
        reference video is encoded at the stage-1 size / this factor."""
        return self.video.reference_downscale_factor if self.video is not None else 1

    @property
    def spatial_scale(self) -> float:
        """The spatial upsampler's scale (2.0, or 1.5 for LTX-2.3's rational one): the tiny model's is x2."""
        if self.tiny_model:
            return 2.0
        path = self.model.spatial_upsampler or self.model.converted_roles().get("spatial_upsampler")
        try:
            return spatial_scale_of(path) if path is not None else 2.0
        except Exception:  # noqa: BLE001 - a header without a config: x2, and the upscale stage's check says why
            return 2.0

    @property
    def stage1_size(self) -> tuple[int, int]:
        """(width, height) of stage 1: target / upsampler scale for the two-stage pipelines, the target otherwise."""
        if not self.two_stage:
            return self.width, self.height
        return stage1_side(self.width, self.spatial_scale), stage1_side(self.height, self.spatial_scale)

    @property
    def output_frames(self) -> int:
        """Frames of the rendered video: 2F-1 with temporal_upscale (2 x (frames-1) intervals + the first)."""
        return 2 * self.frames - 1 if self.temporal_upscale else self.frames

    @property
    def preview_path(self) -> Path:
        return self.output.with_suffix(".preview.png")

    @property
    def lora_strengths(self) -> list[float]:
        return [s for _, s in self.loras]

    @property
    def output_fps(self) -> float:
        return 2 * self.fps if self.temporal_upscale else self.fps

    def weight_files(self, tiny_dir: Path | None = None) -> dict[str, Path]:
        """Role -> path of each weight file or folder this job reads (the tiny ones may not exist yet)."""
        return tiny_model_files(tiny_dir, self.tiny_model) if self.tiny_model else self.model.files()

    @property
    def tiny_model(self) -> str | None:
        """The tiny model's name ("tiny", "tiny-2.3") when the job renders with one, else None."""
        return self.model if isinstance(self.model, str) else None

    def converted_roles(self) -> dict[str, Path]:
        """Role -> converted file (`ltx2 convert`) that stages read instead of the official file."""
        return {} if self.tiny_model else self.model.converted_roles()

    @property
    def distilled_lora_strength(self) -> float:
        return 1.0 if self.tiny_model else self.model.distilled_lora_strength

    @property
    def loras(self) -> list[tuple[Path, float]]:
        """The user LoRAs (path, strength), in the job's order."""
        return [] if self.tiny_model else [(lora.path, float(lora.strength)) for lora in self.model.loras]


# ----------------------------------------------------------------------------- errors -> one message

def _inner_model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside a field's annotation (``list[X]``, ``X | None``, the tagged unions), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def _model_for(loc: tuple) -> type[BaseModel] | None:
    """The pydantic model a location points into (for listing allowed fields)."""
    model: type[BaseModel] | None = Job
    for part in loc:
        if part in ("files", "tiles", "name", "word") or isinstance(part, int):
            continue
        field = model.model_fields.get(part) if model is not None else None
        if field is None:
            return None
        model = _inner_model(field.annotation)
    return model


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, Path):
        return repr(str(value))
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


_EXAMPLES = {"width": 768, "height": 512, "frames": 121, "fps": 24, "seed": 42, "steps": 40, "crf": 23,
             "spatial_tile": 512, "spatial_overlap": 64, "temporal_tile": 64, "temporal_overlap": 24,
             "cfg": 3.0, "stg": 1.0, "rescale": 0.7, "modality": 3.0}


def _describe(err: dict) -> str:
    loc = tuple(p for p in err["loc"] if p not in ("files", "tiles", "name", "word"))
    where = ".".join(str(p) for p in loc) or "(top level)"
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    if kind == "job_rule":
        if "at" in ctx:
            where = ctx["at"] if ctx.get("absolute") or not loc else f"{where}.{ctx['at']}"
            value = ctx["value"]
        if "rule" in ctx:
            return f"{where}: {_show(value)} {ctx['rule']}; {ctx['fix']}"
        return f"{where}: {_show(value)} {err['msg']}"
    if kind == "extra_forbidden":
        parent = _model_for(loc[:-1])
        allowed = sorted(parent.model_fields) if parent else []
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        return f"{where}: unknown field (value {_show(value)}); {hint}allowed here: {', '.join(allowed)}"
    if kind == "missing":
        return f"{where}: missing; it is required"
    if kind == "literal_error":
        expected = ctx.get("expected", "")
        options = re.findall(r"'([^']*)'", expected)
        close = difflib.get_close_matches(str(value), options, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        return f"{where}: {_show(value)} is not one of {', '.join(options)}; use one of them{hint}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        sign = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[kind]
        bound = next(iter(ctx.values()))
        return f"{where}: {_show(value)} is not {sign} {bound}; use a value {sign} {bound}"
    if kind == "string_too_short":
        return f"{where}: {_show(value)} is empty; write some text"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"{where}: {_show(value)} is not a whole number; write one, e.g. {_EXAMPLES.get(loc[-1], 1)}"
    if kind == "finite_number":
        return f"{where}: {_show(value)} is not a finite number; write one, e.g. {_EXAMPLES.get(loc[-1], 1.0)}"
    if kind in ("float_parsing", "float_type"):
        return f"{where}: {_show(value)} is not a number; write one, e.g. {_EXAMPLES.get(loc[-1], 1.0)}"
    if kind == "path_type":
        return f"{where}: {_show(value)} is not a path; write it as text, e.g. {loc[-1]}: some/file"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return f"{where}: {_show(value)} is not a mapping; write its fields as `name: value` lines under it"
    if kind.endswith("_type") or kind.startswith(("int_", "float_", "bool_", "string_", "dict_", "list_", "path_")):
        want = err["msg"].replace("Input should be ", "")
        return f"{where}: {_show(value)} has the wrong type; it should be {want}"
    return f"{where}: {_show(value)}: {err['msg']}"


def format_validation_error(error: ValidationError) -> list[str]:
    """One human line per problem: field, bad value, rule, fix."""
    # dict: a conflict that several fields run into (temporal_upscale with images and audio) is said once
    return list(dict.fromkeys(_describe(e) for e in error.errors(include_url=False)))


# ----------------------------------------------------------------------------- loading

def parse_job(data: Any, base_dir: Path | str | None = None, name: str | None = None,
              source: str = "job") -> Job:
    """Validate a job mapping; relative paths start at ``base_dir``; raise :class:`JobError` listing
    every problem."""
    if not isinstance(data, dict):
        raise JobError(source, [f"(top level): {_show(data)} is not a mapping of fields; write `field: value` lines "
                                "(at least `prompt: ...`)"])
    ctx = {"base_dir": Path(base_dir or os.getcwd()).resolve(), "job_name": name}
    try:
        return Job.model_validate(data, context=ctx)
    except ValidationError as e:
        raise JobError(source, format_validation_error(e)) from None


class _JobLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is recorded (PyYAML would keep the
    last silently, as a typo'd second `seed:` would override the first): the job refuses it."""

    def __init__(self, stream):
        super().__init__(stream)
        self.duplicates: list[str] = []

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, str] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base`: explicit keys may override merged ones
                    continue
                key = self.construct_object(key_node, deep=True)
                mark = key_node.start_mark
                at = f"line {mark.line + 1}, column {mark.column + 1}"
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: the base constructor says so
                    continue
                if first is None:
                    seen[key] = at
                else:
                    self.duplicates.append(f"{_show(key)} at {at}: the key is given twice (first at {first}); keep one")
        return super().construct_mapping(node, deep)


def read_job_file(path: Path) -> Any:
    """The job file's YAML data; a file that is not UTF-8 text, not YAML, or gives a key twice is a JobError."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise JobError(str(path), [f"(file): cannot be read ({e.strerror or e}); give a readable job file"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise JobError(str(path), [f"(file): is not UTF-8 text (byte 0x{raw[e.start]:02x} at line {line}, column "
                                   f"{column}); save it as UTF-8"]) from None
    loader = _JobLoader(text)
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise JobError(str(path), [f"(file): not valid YAML{at}: {getattr(e, 'problem', None) or e}"]) from None
    finally:
        loader.dispose()
    if loader.duplicates:
        raise JobError(str(path), loader.duplicates)
    return data


def load_job(path: str | Path) -> Job:
    """Read and validate a job YAML file before anything runs."""
    path = Path(path)
    if path.is_dir():
        raise JobError(str(path), [f"{path}: is a folder, not a job file; give the job's .yaml file"])
    if not path.is_file():
        raise JobError(str(path), [f"{path}: no such job file"])
    data = read_job_file(path)
    return parse_job(data if data is not None else {}, base_dir=path.resolve().parent, name=path.stem,
                     source=str(path))


# ----------------------------------------------------------------------------- before a run writes anything

def write_problems(job: Job, store: Path) -> list[str]:
    """The folders a run writes into that it cannot (``store``: the artifact store's root), one line each with
    the field, the path and the fix. A folder not made yet counts by the first folder above it that exists."""
    out = []
    for field, path, fix in (("work_dir", job.work_dir, "make it writable, or give another work_dir"),
                             ("store", store, "make it writable, or give another store: folder (or $LTX2_STORE)"),
                             ("output", job.output.parent, "make its folder writable, or give another output")):
        there = _first_existing(path)
        if not there.is_dir():  # $LTX2_STORE naming a file (the job's fields are checked when read)
            what = "is a file, not a folder" if there == path else f"cannot be made: {there} is a file"
            out.append(f"{field}: {str(path)!r} {what}; {fix.replace('make it writable, or ', '')}")
        elif not os.access(there, os.W_OK | os.X_OK):
            what = "is not writable" if there == path else f"cannot be made: {there} is not writable"
            out.append(f"{field}: {str(path)!r} {what}; {fix}")
    return out


def work_dir_holder(job: Job, job_file: Path) -> Path | None:
    """Another job file whose work ``job``'s work_dir holds: the job its manifest.json names, when that file still
    exists and still names this work_dir. Two jobs in one work folder would replace each other's links and
    manifest (and `ltx2 gc` would then drop the first one's artifacts)."""
    try:
        named = json.loads((job.work_dir / "manifest.json").read_text()).get("job")
        if not named:
            return None
        other = Path(named).expanduser().resolve()
        if other == Path(job_file).resolve() or not other.is_file():
            return None
        data = yaml.safe_load(other.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            return None
        work = Path(os.path.expanduser(str(data.get("work_dir") or f"{other.stem}.work")))
        work = work if work.is_absolute() else other.parent / work
        return other if work.resolve() == job.work_dir.resolve() else None
    except (OSError, ValueError, RuntimeError, AttributeError, yaml.YAMLError):
        return None  # nothing readable says so: the folder is this job's
