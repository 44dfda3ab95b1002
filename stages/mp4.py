"""Muxing decoded frames and audio into an .mp4 (H.264 video, AAC audio) with PyAV."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def write_mp4(path: Path, frames: np.ndarray, fps: float, audio: np.ndarray | None = None,
              sample_rate: int | None = None, crf: int = 18, on_frame=None) -> None:
    """Write ``frames`` (T, H, W, 3 uint8) at ``fps`` and optional ``audio`` (channels, samples float32 in [-1, 1]).

    H.264 needs even sizes and yuv420p for players to accept the file; the file is written to a
    temporary name and renamed, so a crash never leaves a truncated mp4 under the real name.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    t, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"H.264 needs even frame sizes, got {w}x{h}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial.mp4")
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(tmp), mode="w") as out:
        vs = out.add_stream("libx264", rate=rate)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.options = {"crf": str(crf), "preset": "medium"}
        astream = None
        if audio is not None:
            if sample_rate is None:
                raise ValueError("audio given without sample_rate")
            audio = np.ascontiguousarray(np.clip(audio, -1.0, 1.0).astype(np.float32))
            layout = "stereo" if audio.shape[0] == 2 else "mono"
            astream = out.add_stream("aac", rate=int(sample_rate), layout=layout)
        for i in range(t):
            frame = av.VideoFrame.from_ndarray(frames[i], format="rgb24")
            for packet in vs.encode(frame):
                out.mux(packet)
            if on_frame is not None:
                on_frame(i + 1, t)
        for packet in vs.encode():
            out.mux(packet)
        if astream is not None:
            # planar float: one row per channel; the encoder resamples into its own frame size
            af = av.AudioFrame.from_ndarray(audio, format="fltp", layout=astream.layout.name)
            af.sample_rate = int(sample_rate)
            af.pts = 0
            for packet in astream.encode(af):
                out.mux(packet)
            for packet in astream.encode():
                out.mux(packet)
    os.replace(tmp, path)
