"""LTX-2.5's duration head outside its v1.2.0 fixture (tests/models/test_parity_v12.py runs that): the frame rule
of the official DurationPredictor on hand-worked cases, the config's defaults, and a file without a head."""

from __future__ import annotations

import json

import mlx.core as mx
import pytest

from ltx2.models.duration_head import DurationHead, DurationHeadConfig, load_duration_head, predicted_frames
from ltx2.models.weights import CheckpointError


@pytest.mark.parametrize("seconds,fps,bounds,frames", [
    (5.0, 24.0, {}, 113),  # 120 frames, floored to the 8k+1 grid
    (5.05, 24.0, {}, 121),  # round(121.2) = 121, on the grid
    (0.5, 24.0, {}, 25),  # clamped up to 1 s = 24 frames, floored to 17 < 24: the next grid point up
    (30.0, 24.0, {}, 473),  # clamped to 20 s = 480 frames, floored
    (0.7349, 24.0, {"min_seconds": 0.1, "max_seconds": 1000.0}, 17),  # round(17.64) = 18, floored
    (2.0, 25.0, {}, 49),  # 50 frames at 25 fps
])
def test_predicted_frames_follow_the_official_rule(seconds, fps, bounds, frames):
    assert predicted_frames(seconds, fps, **bounds) == frames


def test_config_defaults_are_the_official_ones():
    assert DurationHeadConfig.from_config({}) == DurationHeadConfig(4096, 2048, 256, 1, 4, 256)
    cfg = DurationHeadConfig.from_config({"transformer": {"cross_attention_dim": 64},
                                          "duration_head": {"num_queries": 2}})
    assert (cfg.video_dim, cfg.audio_dim, cfg.queries) == (64, 2048, 2)


def test_either_stream_alone_and_neither():
    head = DurationHead(DurationHeadConfig(8, 4, 8, 2, 2, 6))
    v, a = mx.ones((1, 5, 8)), mx.ones((1, 3, 4))
    assert head(v, a).shape == head(v).shape == head(None, a).shape == (1,)
    with pytest.raises(ValueError, match="video tokens, the audio tokens or both"):
        head()


def test_a_file_without_a_head_is_refused(tmp_path):
    path = tmp_path / "vae.safetensors"
    mx.save_safetensors(str(path), {"vae.encoder.conv_in.weight": mx.zeros((2, 2))},
                        metadata={"config": json.dumps({"vae": {}})})
    with pytest.raises(CheckpointError, match="no duration head"):
        load_duration_head(path)
