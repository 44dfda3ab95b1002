"""export: frames.zarr + audio.zarr -> the .mp4 (H.264 + AAC).

Its "artifact" is the video file; beside it a small sidecar (``NAME.mp4.ltx2.json``, written by the
stage wrapper for every file output) records the cache key once the video is in place, so a reused
export is recognised and a half-written one never is.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from .contract import BadInput, MemoryPlan
from .mp4 import write_mp4
from .registry import Port, StageContext, StageDef, StageParams


class Params(StageParams):
    crf: int = Field(23, ge=0, le=51, description="x264 quality: 0 lossless, 23 its default, 51 worst")
    # where the job wants the video: a render written to another path is another export (its own record)
    output: str | None = Field(None, description="the video's path as the job names it (part of the key only)")


def estimate(ctx: StageContext) -> MemoryPlan:
    f = ctx.inputs["frames"].shape("video")
    a = ctx.inputs["audio"].shape("waveform")
    return MemoryPlan(0, int(f[0] * f[1] * f[2] * 3 + a[0] * a[1] * 4) * 2)


def run(ctx: StageContext) -> None:
    frames_art, audio_art = ctx.inputs["frames"], ctx.inputs["audio"]
    out = Path(ctx.out)
    if out.suffix.lower() != ".mp4":
        raise BadInput(f"export: output {out} must end in .mp4")
    frames = frames_art.read_numpy("video")
    audio = audio_art.read_numpy("waveform")
    write_mp4(out, frames, float(frames_art.facts["fps"]), audio, int(audio_art.facts["sample_rate"]),
              crf=int(ctx.params.crf), on_frame=lambda i, n: ctx.progress.step(i, n) if i % 8 == 0 or i == n else None)


STAGE = StageDef(
    name="export", version=1, summary="frames + waveform -> the .mp4 (H.264 + AAC)",
    inputs={"frames": Port("frames"), "audio": Port("audio")}, params=Params, output_kind=None,
    estimate=estimate, run=run, budget_fix="raise memory_budget",
)
