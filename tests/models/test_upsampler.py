"""Latent upsampler config refusal and strict loading (numerics: tests/models/test_parity.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from ltx2.models.upsampler import UpsamplerConfig, UpsamplerConfigError, load_upsampler
from ltx2.models.weights import CheckpointError, read_header

FIXTURE = Path(__file__).parents[1] / "fixtures" / "seed0" / "upsampler_x2.safetensors"

OFFICIAL_X2 = {"_class_name": "LatentUpsampler", "in_channels": 128, "mid_channels": 1024, "num_blocks_per_stage": 4,
               "dims": 3, "spatial_upsample": True, "temporal_upsample": False, "spatial_scale": 2.0,
               "rational_resampler": False}


def test_official_configs_are_understood():
    assert UpsamplerConfig.from_config(OFFICIAL_X2).mode == "spatial"
    # the official temporal file says rational_resampler true / spatial_scale 1.0, which only a spatial head uses
    temporal = dict(OFFICIAL_X2, mid_channels=512, spatial_upsample=False, temporal_upsample=True, spatial_scale=1.0,
                    rational_resampler=True)
    assert UpsamplerConfig.from_config(temporal).mode == "temporal"
    c = UpsamplerConfig.from_config(dict(OFFICIAL_X2, rational_resampler=True, spatial_scale=1.5))
    assert (c.mode, c.rational) == ("rational", (3, 2))


@pytest.mark.parametrize("change,named", [
    ({"rational_resampler": True, "spatial_scale": 3.0}, "spatial_scale=3.0"),
    ({"spatial_scale": 1.5}, "spatial_scale=1.5"),  # x1.5 needs the rational head
    ({"spatial_upsample": False}, "spatial_upsample=False"),
    ({"dims": 2, "temporal_upsample": True}, "dims=2"),
    ({"dims": 1}, "dims=1"),
    ({"mid_channels": 48}, "mid_channels=48"),
    ({"causal": True}, "causal=True"),
    ({"_class_name": "VideoEncoder"}, "_class_name='VideoEncoder'"),
])
def test_unsupported_config_is_refused_naming_the_option(change, named):
    with pytest.raises(UpsamplerConfigError) as e:
        UpsamplerConfig.from_config(dict(OFFICIAL_X2, **change))
    assert named in str(e.value)


def test_strict_loader_names_a_missing_key(tmp_path):
    tensors = load_file(str(FIXTURE))
    del tensors["res_blocks.0.norm1.weight"]
    path = tmp_path / "up.safetensors"
    save_file(tensors, str(path), metadata=read_header(FIXTURE).metadata)
    with pytest.raises(CheckpointError, match=r"missing tensor res_blocks\.0\.norm1\.weight"):
        load_upsampler(path)


def test_loader_refuses_weights_that_do_not_fit_the_config(tmp_path):
    meta = read_header(FIXTURE).metadata
    cfg = json.loads(meta["config"])
    path = tmp_path / "up.safetensors"
    save_file(load_file(str(FIXTURE)), str(path), metadata={"config": json.dumps(dict(cfg, num_blocks_per_stage=2))})
    with pytest.raises(CheckpointError, match=r"missing tensor res_blocks\.1\.conv1\.weight"):
        load_upsampler(path)


def test_upsampled_shapes():
    import mlx.core as mx

    model = load_upsampler(FIXTURE)
    out = model(mx.zeros((1, 3, 4, 5, 8)))
    assert out.shape == (1, 3, 8, 10, 8)
    assert np.isfinite(np.array(out)).all()
