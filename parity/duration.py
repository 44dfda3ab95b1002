"""Parity of LTX-2.5's duration head (v1.2.0 fixture ``duration_head``): the predicted seconds from both streams, the
video tokens only and the audio tokens only, and the DurationPredictor's frame count at 24 fps as the fixture's
maker called it (min 0.1 s, max 1000 s: so the grid snapping, not the clamp, decides)."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import numpy as np

from ltx2.models.duration_head import load_duration_head, predicted_frames

from . import NETWORK_TOL, ParityResult, compare, load_fixture


def check_duration_head(directory: Path, name: str) -> list[ParityResult]:
    z = load_fixture(directory, name)
    head = load_duration_head(Path(directory) / f"{name}.safetensors")
    video, audio = mx.array(z["in_video_tokens"]), mx.array(z["in_audio_tokens"])
    seconds = {"both": head(video, audio), "video_only": head(video, None), "audio_only": head(None, audio)}
    mx.eval(seconds)
    rows = [compare(name, f"out_seconds_{k}", np.array(v), z[f"out_seconds_{k}"], NETWORK_TOL)
            for k, v in seconds.items()]
    frames = predicted_frames(float(seconds["both"][0]), 24.0, min_seconds=0.1, max_seconds=1000.0)
    rows.append(compare(name, "out_num_frames_24fps", frames, int(z["out_num_frames_24fps"][0]), 0.0))
    return rows
