"""The pieces the conv stages' memory estimates are built from (the totals are checked against measured peaks
by benchmarks/pipeline_memory.py on full-size files)."""

from __future__ import annotations

import mlx.core as mx
import pytest

from ltx2.models.upsampler import LatentUpsampler, UpsamplerConfig
from ltx2.models.upsampler.memory import activation_bytes, upsampled_fhw

TINY = {"in_channels": 8, "mid_channels": 32, "num_blocks_per_stage": 1, "dims": 3}


@pytest.mark.parametrize("cfg", [
    {"spatial_upsample": True},
    {"spatial_upsample": False, "temporal_upsample": True},
    {"spatial_upsample": True, "temporal_upsample": True},
    {"spatial_upsample": True, "rational_resampler": True, "spatial_scale": 1.5},
    {"spatial_upsample": True, "rational_resampler": True, "spatial_scale": 0.75},
    {"spatial_upsample": True, "dims": 2},
])
def test_upsampled_grid_is_what_the_network_writes(cfg):
    config = UpsamplerConfig.from_config({**TINY, **cfg})
    out = LatentUpsampler(config)(mx.zeros((1, 3, 5, 7, 8)))
    assert upsampled_fhw(config, (3, 5, 7)) == tuple(out.shape[1:4])


def test_upsampler_activations_grow_with_the_latent_but_the_3d_unfold_is_capped():
    cfg = UpsamplerConfig.from_config({"in_channels": 128, "mid_channels": 1024})
    small, big = activation_bytes(cfg, (16, 8, 12)), activation_bytes(cfg, (16, 16, 24))
    assert small < big
    # 4x the voxels: the activations grow 4x, the (chunked) unfolded conv input does not
    assert big < 4 * small
