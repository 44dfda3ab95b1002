"""The decode tile search: bounded however large the video, and for ordinary sizes the same choice as trying
every tile size (the official 768x512x121 render included)."""

from __future__ import annotations

import math

import pytest

from ltx2.models import full_size
from ltx2.models.video_vae import tiling as tiling_module
from ltx2.models.video_vae.config import VideoVAEConfig
from ltx2.models.video_vae.tiling import (DecodeDoesNotFit, SpatialTiling, TemporalTiling, TilingConfig, blender_bytes,
                                          choose_tiling, estimate_decode_bytes, plan_tiles, tile_grid)

CFG = VideoVAEConfig.from_config(full_size.VAE)  # the real decoder's widths
GiB = 1 << 30


def exhaustive(cfg, latent, budget, weights, overhead=256 << 20):
    """Every multiple of 32 px / 8 frames, each made into a full plan: the search as it was before it was bounded."""
    f, h, w = latent
    vf, vh, vw = cfg.video_shape(latent)
    untiled = weights + overhead + estimate_decode_bytes(cfg, latent) + 2 * cfg.out_channels * vf * vh * vw * 4
    if untiled <= budget:
        return None
    best = None
    for sp in [None] + [SpatialTiling(s, min(64, s // 2 // 32 * 32)) for s in range(64, max(h, w) * 32 + 1, 32)]:
        for tp in [None] + [TemporalTiling(t, min(24, t // 2 // 8 * 8)) for t in range(16, (f - 1) * 8 + 1, 8)]:
            plan = plan_tiles(cfg, latent, TilingConfig(sp, tp))
            biggest = max((t.latent_fhw for t in plan.tiles), key=math.prod)
            need = weights + overhead + estimate_decode_bytes(cfg, biggest) + blender_bytes(plan, 1, cfg.out_channels)
            key = (sum(math.prod(t.latent_fhw) for t in plan.tiles), len(plan))
            if need <= budget and (best is None or key < best[0]):
                best = (key, TilingConfig(sp, tp), need)
    return best


@pytest.mark.parametrize("budget_gib, weights", [(3, 2e9), (4, 2e9), (8, 2e9), (32, 2e9), (1, 2e8), (5, 2e8)])
def test_the_official_768x512x121_choice_is_the_exhaustive_one(budget_gib, weights):
    latent = (16, 16, 24)  # 121 frames at 512 x 768
    ref = exhaustive(CFG, latent, budget_gib * GiB, int(weights))
    got = choose_tiling(CFG, latent, budget_gib * GiB, int(weights))
    if ref is None:
        assert got.tiling is None
    else:
        assert (got.tiling, got.estimated_bytes) == (ref[1], ref[2])
        assert len(got.plan) == ref[0][1]


def test_the_search_is_bounded_for_the_largest_video(monkeypatch):
    """4096 x 4096 x 1001 frames: a few thousand cheap estimates and one plan, not every size made into a plan."""
    calls = {"estimate": 0, "plan": 0}
    real_estimate, real_plan = tiling_module.estimate_decode_bytes, tiling_module.plan_tiles

    def counted_estimate(*a, **k):
        calls["estimate"] += 1
        return real_estimate(*a, **k)

    def counted_plan(*a, **k):
        calls["plan"] += 1
        return real_plan(*a, **k)

    monkeypatch.setattr(tiling_module, "estimate_decode_bytes", counted_estimate)
    monkeypatch.setattr(tiling_module, "plan_tiles", counted_plan)
    latent = (126, 128, 128)
    choice = choose_tiling(CFG, latent, 16 * GiB, int(2e9))
    assert choice.estimated_bytes <= 16 * GiB and choice.tiling is not None
    assert calls["plan"] == 1
    # every multiple up to 1024 px / 256 frames, then about ten sizes each way: far below the 127 x 124 sizes
    # an exhaustive search makes into plans (each of up to millions of tiles)
    assert calls["estimate"] <= 1 + 41 * 41, calls
    with pytest.raises(DecodeDoesNotFit):
        choose_tiling(CFG, latent, 2 * GiB, int(2e9))


@pytest.mark.parametrize("tiling", [None, TilingConfig(SpatialTiling(256, 64), None),
                                    TilingConfig(None, TemporalTiling(32, 8)),
                                    TilingConfig(SpatialTiling(192, 64), TemporalTiling(24, 8)),
                                    TilingConfig(SpatialTiling(64, 32), TemporalTiling(16, 8))])
def test_the_grid_says_what_the_plan_would(tiling):
    latent = (16, 16, 24)
    grid, plan = tile_grid(CFG, latent, tiling), plan_tiles(CFG, latent, tiling)
    assert len(grid) == len(plan) and grid.video_fhw == plan.video_fhw
    assert grid.biggest == max((t.latent_fhw for t in plan.tiles), key=math.prod)
    assert grid.work == sum(math.prod(t.latent_fhw) for t in plan.tiles)
    assert grid.group_frames == plan.group_frames
    assert blender_bytes(grid, 1, 3) == blender_bytes(plan, 1, 3)
