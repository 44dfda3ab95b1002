"""Parameter types several stages share (each stage's own Params class lives in its module).

Sampling schedules, multi-modal guidance, the weights mode the planner picks, decode tiles, LoRA
strengths. The job file (orchestrator/job.py) takes guidance in these same types, so their defaults,
which follow the official model (spec.versions), exist once.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag

from ltx2.models.weights.modes import WeightsMode, WeightsModeError
from ltx2.spec.versions import DEFAULT_VERSION, GuidanceDefaults

_FROZEN = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class FixedSchedule(BaseModel):
    """A published sigma list (the distilled model's)."""

    model_config = _FROZEN
    kind: Literal["fixed"] = "fixed"
    sigmas: list[float] = Field(min_length=2)


class Ltx2Schedule(BaseModel):
    """The LTX2Scheduler's shifted schedule; ``steps`` None: the checkpoint's official count (spec.versions)."""

    model_config = _FROZEN
    kind: Literal["ltx2"] = "ltx2"
    steps: int | None = Field(None, ge=1)


Schedule = Annotated[Union[Annotated[FixedSchedule, Tag("fixed")], Annotated[Ltx2Schedule, Tag("ltx2")]],
                     Discriminator(lambda v: v.get("kind") if isinstance(v, dict) else getattr(v, "kind", None))]


def _stream(d: GuidanceDefaults):
    """A guidance model with the official defaults ``d`` of one stream."""

    class _Guidance(StreamGuidance):
        cfg: float = Field(d.cfg, ge=0.0)
        stg: float = Field(d.stg, ge=0.0)
        rescale: float = Field(d.rescale, ge=0.0, le=1.0)
        modality: float = Field(d.modality, ge=0.0)

    return _Guidance


class StreamGuidance(BaseModel):
    """Multi-modal guidance of one stream: pred = c + (cfg-1)(c-uncond) + stg(c-perturbed) + (modality-1)(c-no_av),
    then rescaled toward the conditional prediction's std by ``rescale``."""

    model_config = _FROZEN

    cfg: float = Field(ge=0.0)          # classifier-free guidance; 1 = off
    stg: float = Field(ge=0.0)          # spatio-temporal guidance (perturbed self-attention); 0 = off
    rescale: float = Field(ge=0.0, le=1.0)
    modality: float = Field(ge=0.0)     # audio<->video cross-attention guidance; 1 = off
    # transformer blocks STG perturbs; None: the checkpoint's official choice (spec.versions), resolved when planned
    stg_blocks: list[Annotated[int, Field(ge=0)]] | None = None
    skip_step: int = Field(0, ge=0)     # guide only every (skip_step+1)-th step


class VideoGuidance(_stream(DEFAULT_VERSION.video_guidance)):
    pass


class AudioGuidance(_stream(DEFAULT_VERSION.audio_guidance)):
    pass


class Guidance(BaseModel):
    model_config = _FROZEN

    video: VideoGuidance = VideoGuidance()
    audio: AudioGuidance = AudioGuidance()


def _weights_mode(value: Any) -> dict[str, Any]:
    try:
        return WeightsMode.from_params(value).params()
    except WeightsModeError as e:
        raise ValueError(str(e)) from None


# How a large network's weights are held (precision, streaming); the planner picks it. Canonical form: the
# same mode always dumps the same way, so a stage run by hand without it gets the float32 choice's key.
WeightsModeParam = Annotated[dict[str, Any], BeforeValidator(_weights_mode)]
DEFAULT_WEIGHTS_MODE: dict[str, Any] = WeightsMode().params()


def compute_field() -> Any:
    """The ``compute`` parameter of a stage that runs a network: the width its activations are computed at
    (models/precision.py); a job's ``compute: auto`` arrives resolved. float32 when a stage runs by hand without it."""
    return Field("float32", description="activation precision: float32 (exact) | bfloat16 | float16 (the job's "
                                        "compute: auto gives bfloat16 on a GPU, float32 on CPU)")


class Tiles(BaseModel):
    """Decode tiles (pixels, frames); a tile of None: no tiling along that axis."""

    model_config = _FROZEN

    spatial_tile: int | None = Field(None, ge=64, multiple_of=32)
    spatial_overlap: int = Field(64, ge=0, multiple_of=32)
    temporal_tile: int | None = Field(None, ge=16, multiple_of=8)
    temporal_overlap: int = Field(24, ge=0, multiple_of=8)

    def label(self) -> str:
        parts = []
        if self.spatial_tile:
            parts.append(f"{self.spatial_tile} px/{self.spatial_overlap}")
        if self.temporal_tile:
            parts.append(f"{self.temporal_tile} f/{self.temporal_overlap}")
        return "tiles " + " x ".join(parts) if parts else "untiled"


class DistilledLora(BaseModel):
    model_config = _FROZEN
    strength: float = Field(1.0, ge=0.0)  # the official default


LoraStrengths = list[float]  # one per weight role lora.1, lora.2, ... (the job's own LoRAs)


class CondItem(BaseModel):
    """How one ``conditioning`` input (an encode stage's artifact, same position in the port's list) applies to the
    latent state, as the official conditioning items do:

    - ``replace`` (VideoConditionByLatentIndex): the image's tokens replace latent frame ``frame // 8`` of the clean
      latent, denoise mask ``1 - strength`` there (``frame`` a multiple of 8);
    - ``keyframe`` (VideoConditionByKeyframeIndex): the image's tokens appended, placed in time at pixel frame
      ``frame``, denoise mask ``1 - strength``;
    - ``reference`` (VideoConditionByReferenceLatent, IC-LoRA): the reference video's tokens appended, positions x
      ``downscale_factor``; with the artifact's attention weights (x ``attention_strength``) or an
      ``attention_strength`` below 1, the conditioning attention mask;
    - ``frozen`` (audio-to-video): the audio latent is the audio state, kept as given (mask 0, its sigma 0);
    - ``source`` (retake): the clip's latent is the initial state of its stream; the stage's ``retake`` window
      sets which tokens are regenerated.
    """

    model_config = _FROZEN
    use: Literal["replace", "keyframe", "reference", "frozen", "source"]
    frame: int = Field(0, ge=0, description="pixel frame (replace, keyframe)")
    strength: float = Field(1.0, ge=0.0, le=1.0, description="1: kept as given; 0: fully regenerated")
    downscale_factor: int = Field(1, ge=1, description="target / reference size (reference)")
    attention_strength: float = Field(1.0, ge=0.0, le=1.0, description="scales the conditioning attention mask")


class RetakeWindow(BaseModel):
    """The time window [start, end) seconds a retake regenerates (TemporalRegionMask); outside it the source is kept."""

    model_config = _FROZEN
    start: float = Field(ge=0.0)
    end: float = Field(gt=0.0)
