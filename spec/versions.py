"""Model versions of the LTX-2 family: the official defaults that depend on which model a checkpoint is.

A checkpoint names its version in its safetensors metadata (``model_version``: "2.0...", "2.3...",
or this project's "tiny-2.0" / "tiny-2.3"). Each version is one entry of :data:`VERSIONS`; code asks
:func:`model_version` for the entry instead of comparing strings.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GuidanceDefaults:
    """The official multi-modal guidance of one stream (cfg 1 / stg 0 / modality 1 = off)."""

    cfg: float
    stg: float
    rescale: float
    modality: float


@dataclass(frozen=True)
class ModelVersion:
    name: str  # "2.0", "2.3"
    title: str
    official_steps: int  # LTX2Scheduler steps of the guided stage 1
    stg_block: int  # the transformer block STG perturbs (the last one in a smaller model)
    video_guidance: GuidanceDefaults
    audio_guidance: GuidanceDefaults
    # H.264 CRF a conditioning image is re-compressed at (the compression the model was trained against)
    default_image_crf: int
    supported: bool = True

    def stg_blocks(self, num_layers: int) -> list[int]:
        """The official STG blocks for a transformer of ``num_layers`` blocks (the tiny model has 2)."""
        return [min(self.stg_block, num_layers - 1)]


_VIDEO = GuidanceDefaults(cfg=3.0, stg=1.0, rescale=0.7, modality=3.0)
_AUDIO = GuidanceDefaults(cfg=7.0, stg=1.0, rescale=0.7, modality=3.0)

VERSIONS: dict[str, ModelVersion] = {
    "2.0": ModelVersion("2.0", "LTX-2 (19B)", official_steps=40, stg_block=29, video_guidance=_VIDEO,
                        audio_guidance=_AUDIO, default_image_crf=33),
    "2.3": ModelVersion("2.3", "LTX-2.3 (22B)", official_steps=30, stg_block=28, video_guidance=_VIDEO,
                        audio_guidance=_AUDIO, default_image_crf=33),
}
DEFAULT_VERSION = VERSIONS["2.0"]


def model_version(metadata_version: str | None) -> ModelVersion:
    """The entry for a checkpoint's ``model_version`` metadata ("2.3.0" or "tiny-2.3" -> 2.3; absent or "tiny-2.0" -> 2.0)."""
    v = (metadata_version or "").removeprefix("tiny-")
    for name, entry in VERSIONS.items():
        if v == name or v.startswith(name + "."):
            return entry
    return DEFAULT_VERSION


def default_image_crf(metadata_version: str | None) -> int:
    return model_version(metadata_version).default_image_crf


def official_steps(metadata_version: str | None) -> int:
    return model_version(metadata_version).official_steps


def official_stg_blocks(metadata_version: str | None, num_layers: int) -> list[int]:
    return model_version(metadata_version).stg_blocks(num_layers)
