"""Tiled video encoding: the official v1.2.0 tile geometry and blend, re-derived here in numpy; one tile is the
untiled encoding bit for bit; the memory estimate bounds the measured peak; the tile search fits a budget."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_map_with_path

from ltx2.models.tiny import configs as tiny
from ltx2.models.video_vae import SpatialTiling, TemporalTiling, VideoEncoder, VideoVAEConfig
from ltx2.models.video_vae.encode_tiling import (EncodeDoesNotFit, EncodePlan, EncodeTile, EncodeTiling,
                                                 EncodeTilingError, choose_encode_tiling, encode_grid,
                                                 estimate_encode_bytes, plan_encode_tiles, tiled_encode)


def _encoder(seed: int, pointwise: bool = False, **changes) -> VideoEncoder:
    """The tiny model's encoder block list with random weights; ``pointwise``: every 3x3x3 convolution keeps only
    its tap on the current frame and voxel, so each latent voxel depends only on the pixels it compresses."""
    cfg = VideoVAEConfig.from_config({"vae": dict(tiny.VAE, **changes)})
    mx.random.seed(seed)
    enc = VideoEncoder(cfg)

    def fill(_path, p):
        p = mx.random.normal(p.shape) * (0.3 if p.ndim < 2 else 1.0 / np.sqrt(max(1, p[0].size)))
        if pointwise and p.ndim == 5 and p.shape[1] == 3:  # (O, kt, kh, kw, I): causal, so the last tap is frame t
            p = mx.zeros_like(p).at[:, 2, 1, 1, :].add(p[:, 2, 1, 1, :] * 3)
        return p

    enc.update(tree_map_with_path(fill, enc.parameters()))
    enc.per_channel_statistics.std_of_means = mx.abs(enc.per_channel_statistics.std_of_means) + 0.5
    mx.eval(enc.parameters())
    return enc


def _video(fhw, seed: int) -> mx.array:
    return mx.random.uniform(-1, 1, (1, *fhw, 3), key=mx.random.key(seed))


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# -- the official algorithm, written out independently (ltx_core.tiling + VideoEncoder.tiled_encode, v1.2.0) -----
def _official_split(n: int, size: int, overlap: int, causal: bool) -> list[tuple[int, int, int, int]]:
    if n <= size:
        return [(0, n, 0, 0)]
    step = size - overlap
    amount = (n + size - 2 * overlap - 1) // step
    ivs = [(0, size, 0, overlap)] + [(i * step, i * step + size, overlap, overlap) for i in range(1, amount - 1)] \
        + [((amount - 1) * step, n, overlap, 0)]
    if causal:
        ivs = ivs[:1] + [(a - 1, b, left + 1, right) for a, b, left, right in ivs[1:]]
    return ivs


def _official_trapezoid(length: int, left: int, right: int, from_zero: bool) -> np.ndarray:
    left, right = max(0, min(left, length)), max(0, min(right, length))
    mask = np.ones(length, np.float32)
    if left:
        fade = np.linspace(0.0, 1.0, left + 1 if from_zero else left + 2, dtype=np.float32)[:-1]
        mask[:left] *= fade if from_zero else fade[1:]
    if right:
        mask[-right:] *= np.linspace(1.0, 0.0, right + 2, dtype=np.float32)[1:-1]
    return np.clip(mask, 0, 1)


def _official_tiled_encode(encoder: VideoEncoder, video: mx.array, tile_px: int, overlap_px: int,
                           tile_frames: int, overlap_frames: int) -> tuple[np.ndarray, bool]:
    _, frames, height, width, _ = video.shape
    lf, lh, lw = (frames - 1) // 8 + 1, height // 32, width // 32
    t_iv = _official_split(lf, tile_frames // 8, overlap_frames // 8, True)
    h_iv = _official_split(lh, tile_px // 32, overlap_px // 32, False)
    w_iv = _official_split(lw, tile_px // 32, overlap_px // 32, False)
    masks = [[_official_trapezoid(b - a, left, right, axis == 0) for a, b, left, right in ivs]
             for axis, ivs in enumerate((t_iv, h_iv, w_iv))]
    # masks_are_complementary: per axis, the distinct intervals' ramps sum to one (then no denominator)
    complementary = True
    for ivs, ms, n in zip((t_iv, h_iv, w_iv), masks, (lf, lh, lw)):
        acc = np.zeros(n, np.float32)
        for (a, b, _, _), m in zip(ivs, ms):
            acc[a:b] += m
        complementary &= bool(np.allclose(acc, 1.0, atol=1e-5, rtol=0))
    out = np.zeros((1, lf, lh, lw, encoder.cfg.latent_channels), np.float32)
    weights = np.zeros((1, lf, lh, lw, 1), np.float32)
    for t, mt in zip(t_iv, masks[0]):
        for h, mh in zip(h_iv, masks[1]):
            for w, mw in zip(w_iv, masks[2]):
                tile = video[:, t[0] * 8:1 + (t[1] - 1) * 8, h[0] * 32:h[1] * 32, w[0] * 32:w[1] * 32]
                lat = np.array(encoder(tile))
                m = mt[None, :, None, None, None] * mh[None, None, :, None, None] * mw[None, None, None, :, None]
                out[:, t[0]:t[1], h[0]:h[1], w[0]:w[1]] += lat * m
                weights[:, t[0]:t[1], h[0]:h[1], w[0]:w[1]] += m
    return (out if complementary else out / np.maximum(weights, 1e-8)), complementary


# -- tests ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fhw,tiling", [
    # 3 x 2 x 3 tiles whose ramps overlap inside a tile (overlap 2 of 3 latents): the weighted, divided branch
    ((33, 128, 160), (96, 64, 24, 16)),
    # 2 x 2 x 4 tiles, ramps that sum to one (the branch without a denominator); time: a 3-frame causal left ramp
    ((41, 192, 288), (128, 64, 32, 16)),
])
def test_tiled_encode_is_the_official_blend(fhw, tiling):
    enc = _encoder(3)
    video = _video(fhw, 4)
    tile_px, overlap_px, tile_frames, overlap_frames = tiling
    t = EncodeTiling(SpatialTiling(tile_px, overlap_px), TemporalTiling(tile_frames, overlap_frames))
    plan = plan_encode_tiles(enc.cfg, fhw, t)
    got = np.array(tiled_encode(enc, video, t))
    want, complementary = _official_tiled_encode(enc, video, *tiling)
    assert len(plan) > 4 and plan.complementary == complementary
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * np.abs(want).max())
    # and a tiled encode is not the untiled one on a real (mixing) encoder: the blend is what is being compared
    assert _rel(got, np.array(enc(video))) > 1e-3


def test_one_tile_is_the_untiled_encoding_bit_for_bit():
    enc = _encoder(5)
    video = _video((17, 64, 96), 6)
    untiled = np.array(enc(video))
    for tiling in (None, EncodeTiling.default(), EncodeTiling(SpatialTiling(96, 64), TemporalTiling(24, 16))):
        plan = plan_encode_tiles(enc.cfg, (17, 64, 96), tiling)
        assert len(plan) == 1
        np.testing.assert_array_equal(np.array(tiled_encode(enc, video, tiling)), untiled)


def test_tiles_of_a_pointwise_encoder_blend_back_to_the_untiled_encoding():
    """With convolutions that do not mix neighbouring voxels, every tile computes exactly the untiled latents
    (except a temporal tile's first latent frame, which sees only one pixel frame and gets weight 0): a wrong
    slice, ramp or blend would show. The 50th frame is dropped first (not 1 + 8k)."""
    enc = _encoder(7, pointwise=True)
    video = _video((50, 128, 192), 8)
    untiled = np.array(enc(video))
    for tiling in (EncodeTiling(SpatialTiling(96, 64), TemporalTiling(24, 16)),
                   EncodeTiling(SpatialTiling(128, 64), TemporalTiling(32, 24)),
                   EncodeTiling(None, TemporalTiling(24, 16)), EncodeTiling(SpatialTiling(96, 64), None)):
        got = np.array(tiled_encode(enc, video, tiling))
        assert got.shape == untiled.shape == (1, 7, 4, 6, 8)
        assert _rel(got, untiled) < 1e-6, tiling


def test_the_weighted_path_divides_by_the_summed_ramps():
    """Ramps that do not sum to one (the official code's other branch) are normalised by their sum: halving every
    tile's weights leaves the result unchanged."""
    enc = _encoder(9)
    video = _video((33, 128, 160), 10)
    plan = plan_encode_tiles(enc.cfg, (33, 128, 160), EncodeTiling(SpatialTiling(96, 64), TemporalTiling(24, 16)))
    halved = EncodePlan(plan.video_fhw, plan.latent_fhw, tuple(
        EncodeTile(t.index, t.pixels, t.latent, (t.masks[0] * 0.5, t.masks[1], t.masks[2])) for t in plan.tiles),
        complementary=False)
    a, b = np.array(tiled_encode(enc, video, plan)), np.array(tiled_encode(enc, video, halved))
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-6 * np.abs(a).max())


def test_the_official_default_tiles_of_a_768x512x121_encode():
    """TileSizeConfig.default(): 768 px on each axis (both fit: one spatial tile), 80 frames by 24: two temporal
    tiles, the second starting one latent frame early."""
    cfg = VideoVAEConfig.from_config({"vae": tiny.VAE})
    grid = encode_grid(cfg, (121, 512, 768), EncodeTiling.default())
    t, h, w = grid.axes
    assert [(i.start, i.end, i.left_ramp, i.right_ramp) for i in t] == [(0, 10, 0, 3), (6, 16, 4, 0)]
    assert len(h) == len(w) == 1 and grid.latent_fhw == (16, 16, 24)
    # the spatial axes are cut independently at the full tile size (no aspect scaling, unlike decode tiles)
    grid = encode_grid(cfg, (9, 512, 1024), EncodeTiling(SpatialTiling(512, 64), None))
    assert [(i.start, i.end) for i in grid.axes[1]] == [(0, 16)]
    assert [(i.start, i.end) for i in grid.axes[2]] == [(0, 16), (14, 30), (28, 32)]


def test_overlaps_below_the_official_minimum_are_refused():
    with pytest.raises(EncodeTilingError, match="64"):
        EncodeTiling(SpatialTiling(512, 32), None)
    with pytest.raises(EncodeTilingError, match="16"):
        EncodeTiling(None, TemporalTiling(64, 8))


def test_activation_estimate_bounds_the_measured_peak():
    res = lambda n: ["res_x", {"num_layers": n}]  # noqa: E731
    enc = _encoder(11, latent_channels=16, encoder_blocks=[
        res(2), ["compress_space_res", {"multiplier": 2}], res(1), ["compress_time_res", {"multiplier": 2}], res(1),
        ["compress_all_res", {"multiplier": 2}], res(1), ["compress_all_res", {"multiplier": 1}], res(1)])
    for fhw in ((17, 128, 192), (9, 64, 96)):
        video = _video(fhw, 12)
        mx.eval(video)
        mx.reset_peak_memory()
        base = mx.get_active_memory()
        mx.eval(enc(video[:, :, :, :]))
        measured = mx.get_peak_memory() - base
        est = estimate_encode_bytes(enc.cfg, fhw)
        assert measured <= est <= 3 * measured, (fhw, measured, est)


def test_the_tile_search_fits_the_budget_at_real_widths():
    """The real LTX-2.3 encoder widths (128 -> 1024): a 768x512x121 encode does not fit 16 GB untiled, fits tiled;
    a smaller budget gives smaller tiles; a budget the weights fill is refused."""
    res = lambda n: ["res_x", {"num_layers": n}]  # noqa: E731
    cfg = VideoVAEConfig.from_config({"vae": dict(tiny.VAE, latent_channels=128, encoder_blocks=[
        res(4), ["compress_space_res", {"multiplier": 2}], res(6), ["compress_time_res", {"multiplier": 2}], res(4),
        ["compress_all_res", {"multiplier": 2}], res(2), ["compress_all_res", {"multiplier": 1}], res(2)])})
    fixed = 4 << 30
    video = (121, 512, 768)
    assert estimate_encode_bytes(cfg, video) + fixed > 16 << 30
    big = choose_encode_tiling(cfg, video, 64 << 30, fixed)
    assert big.tiling is None
    mid = choose_encode_tiling(cfg, video, 16 << 30, fixed)
    small = choose_encode_tiling(cfg, video, 6 << 30, fixed)
    for choice, budget in ((mid, 16 << 30), (small, 6 << 30)):
        assert choice.tiling is not None and choice.estimated_bytes <= budget
        plan = plan_encode_tiles(cfg, video, choice.tiling)
        biggest = max((t.video_fhw for t in plan.tiles), key=np.prod)
        assert estimate_encode_bytes(cfg, biggest) + fixed < budget
    assert np.prod(small.grid.biggest) < np.prod(mid.grid.biggest)
    with pytest.raises(EncodeDoesNotFit, match="budget"):
        choose_encode_tiling(cfg, video, fixed, fixed)
