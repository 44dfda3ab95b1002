"""soundtrack: an audio file -> audio.zarr, the clip's span of the file's own waveform.

Audio-to-video keeps the given soundtrack: the official A2VidPipelineTwoStage returns the input audio itself rather
than a decode of its (frozen) latent, so the render's sound is the file's, sample for sample. This stage reads the
window [start, start + frames / fps) of the file at its own rate and channels (mono is kept mono) and writes it as
the `audio` artifact export and preview read.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from .contract import BadInput, MemoryPlan
from .media import decode_audio, probe
from .registry import FILE, Port, PredictedOutput, StageContext, StageDef, StageParams


class Params(StageParams):
    frames: int = Field(9, ge=1, description="pixel frames of the clip the sound goes with")
    fps: float = Field(24.0, gt=0, description="frame rate of the clip")
    start: float = Field(0.0, ge=0.0, description="seconds into the file where the clip's sound starts")


def _duration(ctx: StageContext) -> float:
    return ctx.params.frames / ctx.params.fps


def check(ctx: StageContext) -> None:
    path = ctx.inputs["audio"]
    info = probe(path)
    if not info.has_audio:
        raise BadInput(f"soundtrack: {path} holds no audio stream; give an audio file or a video with sound")
    if info.duration_s and info.duration_s - ctx.params.start < _duration(ctx) - 1e-3:
        raise BadInput(f"soundtrack: {path} has {info.duration_s - ctx.params.start:.3f} s of sound from "
                       f"{ctx.params.start} s, the clip lasts {_duration(ctx):.3f} s; give a longer file or an "
                       "earlier start")


def _samples(ctx: StageContext, rate: int) -> int:
    return int(round(_duration(ctx) * rate))


def predict(ctx: StageContext) -> PredictedOutput:
    info = probe(ctx.inputs["audio"])
    n, c = _samples(ctx, int(info.sample_rate)), min(int(info.channels), 2)
    return PredictedOutput({"waveform": (c, n)}, {"sample_rate": int(info.sample_rate), "channels": c, "sample_count": n})


def estimate(ctx: StageContext) -> MemoryPlan:
    info = probe(ctx.inputs["audio"])
    # the decoded window as float32, and once more as written (no network)
    return MemoryPlan(0, 2 * 4 * int(info.channels) * _samples(ctx, int(info.sample_rate)))


def run(ctx: StageContext) -> None:
    wave, rate = decode_audio(ctx.inputs["audio"], ctx.params.start, _duration(ctx))
    n = _samples(ctx, rate)
    if wave.shape[1] < n:  # the last frame's rounding: pad with silence, never more than a few samples
        wave = np.pad(wave, ((0, 0), (0, n - wave.shape[1])))
    wave = np.ascontiguousarray(wave[:2, :n], dtype=np.float32)  # the mp4 carries mono or stereo
    w = ctx.writer()
    w.write_array("waveform", wave)
    w.finalize({"sample_rate": int(rate), "channels": int(wave.shape[0]), "sample_count": int(n)})


STAGE = StageDef(
    name="soundtrack", version=1, summary="a soundtrack file -> the clip's span of its waveform (audio-to-video)",
    inputs={"audio": Port(FILE)}, params=Params, output_kind="audio", output_name="soundtrack.zarr",
    estimate=estimate, run=run, check=check, predict=predict,
)
