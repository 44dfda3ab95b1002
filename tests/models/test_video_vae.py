"""Video VAE behaviour beyond parity: layouts, tiling, the memory plan, noise, config and loading errors."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten, tree_map_with_path
from safetensors.numpy import load_file, save_file

from ltx2.models.ops import causal_time_padding, depth_to_space, pad_video, space_to_depth
from ltx2.parity.video_vae import TorchCPUNormal, recorded_noise
from ltx2.models.video_vae import (DecodeDoesNotFit, KeyNoise, SpatialTiling, TemporalTiling, TileBlender, TilingConfig,
                                   VAEConfigError, VideoDecoder, VideoVAEConfig, choose_tiling,
                                   decode_tiled_video, decode_tiles, estimate_decode_bytes, load_video_decoder,
                                   load_video_encoder, plan_tiles)
from ltx2.models.weights import CheckpointError

FIXTURES = Path(__file__).parents[1] / "fixtures"
TSC = FIXTURES / "seed0" / "video_vae_timestep_cond"


def _decoder_cfg(**changes) -> VideoVAEConfig:
    res = ["res_x", {"num_layers": 1}]
    up = ["compress_all", {"residual": True, "multiplier": 2}]
    vae = dict(latent_channels=4, out_channels=3, decoder_base_channels=2, timestep_conditioning=False,
               decoder_blocks=[res, ["compress_all", {"multiplier": 2}], res, up, res, up, res])
    vae.update(changes)
    return VideoVAEConfig.from_config({"vae": vae})


def _ltx23_cfg(**changes) -> VideoVAEConfig:
    """The LTX-2.3 decoder's block list (up-blocks compress_all x2, compress_all x1, compress_time x2,
    compress_space x2, latent side first) at a small width."""
    res = ["res_x", {"num_layers": 1, "inject_noise": False}]
    vae = dict(latent_channels=8, out_channels=3, decoder_base_channels=4, timestep_conditioning=False,
               spatial_padding_mode="zeros",
               decoder_blocks=[res, ["compress_space", {"multiplier": 2}], res, ["compress_time", {"multiplier": 2}],
                               res, ["compress_all", {"multiplier": 1}], res, ["compress_all", {"multiplier": 2}], res])
    vae.update(changes)
    return VideoVAEConfig.from_config({"vae": vae})


def _random_decoder(cfg: VideoVAEConfig, seed: int, pointwise: bool = False) -> VideoDecoder:
    mx.random.seed(seed)
    dec = VideoDecoder(cfg)

    def fill(path, p):
        p = mx.random.normal(p.shape) * (0.3 if p.ndim < 2 else 1.0 / np.sqrt(max(1, p[0].size)))
        if pointwise and p.ndim == 5 and p.shape[1] == 3:  # keep only the centre tap: no mixing across voxels
            p = mx.zeros_like(p).at[:, 1, 1, 1, :].add(p[:, 1, 1, 1, :] * 3)
        return p

    dec.update(tree_map_with_path(fill, dec.parameters()))
    dec.per_channel_statistics.std_of_means = mx.abs(dec.per_channel_statistics.std_of_means) + 0.5
    mx.eval(dec.parameters())
    return dec


# -- ops --------------------------------------------------------------------------------------------
def _einops_d2s(x: np.ndarray, f: tuple, order: tuple) -> np.ndarray:
    """b (c s_order...) d h w -> b c (d f0) (h f1) (w f2), channels-first, as einops would do it."""
    b, ch, *dims = x.shape
    c = ch // int(np.prod(f))
    x = x.reshape(b, c, *[f[a] for a in order], *dims)
    sub_axis = {a: 2 + j for j, a in enumerate(order)}
    perm = [0, 1] + [ax for a in range(3) for ax in (5 + a, sub_axis[a])]
    return x.transpose(perm).reshape(b, c, *[d * k for d, k in zip(dims, f)])


@pytest.mark.parametrize("factors,order", [((2, 2, 2), (0, 1, 2)), ((1, 4, 4), (0, 2, 1)), ((2, 1, 1), (0, 1, 2)),
                                           ((1, 2, 3), (2, 0, 1))])
def test_depth_to_space_matches_einops_channel_order(factors, order):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3 * int(np.prod(factors)), 2, 3, 4)).astype(np.float32)
    ref = _einops_d2s(x, factors, order)
    got = depth_to_space(mx.array(np.moveaxis(x, 1, -1)), factors, order)
    np.testing.assert_array_equal(np.moveaxis(np.array(got), -1, 1), ref)
    back = space_to_depth(got, factors, order)
    np.testing.assert_array_equal(np.moveaxis(np.array(back), -1, 1), x)


@pytest.mark.parametrize("mode,np_mode", [("reflect", "reflect"), ("replicate", "edge"), ("zeros", "constant")])
@pytest.mark.parametrize("causal", [True, False])
def test_pad_video_matches_numpy(mode, np_mode, causal):
    x = np.random.default_rng(1).standard_normal((1, 4, 3, 5, 2)).astype(np.float32)
    front, back = causal_time_padding(3, causal)
    ref = np.pad(np.pad(x, [(0, 0), (front, back), (0, 0), (0, 0), (0, 0)], mode="edge"),
                 [(0, 0), (0, 0), (1, 1), (1, 1), (0, 0)], mode=np_mode)
    np.testing.assert_array_equal(np.array(pad_video(mx.array(x), front, back, 1, mode)), ref)


# -- tiling -----------------------------------------------------------------------------------------
def test_tiled_equals_untiled_for_a_decoder_without_spatial_or_temporal_mixing():
    """With centre-tap-only convolutions every output voxel depends on one latent voxel, so any
    correct tiling + blending reproduces the untiled decode exactly; misplaced tiles, wrong masks or
    a wrong temporal offset would not."""
    cfg = _decoder_cfg()
    dec = _random_decoder(cfg, 1, pointwise=True)
    latent = mx.random.normal((1, 5, 4, 5, 4), key=mx.random.key(2))
    untiled = dec(latent)
    tiling = TilingConfig(SpatialTiling(64, 32), TemporalTiling(16, 8))
    plan = plan_tiles(cfg, (5, 4, 5), tiling)
    assert len({t.group for t in plan.tiles}) == 4 and len(plan) == 4 * 3 * 4  # tiles overlap in t, h and w
    tiled = decode_tiled_video(dec, latent, tiling)
    assert tiled.shape == untiled.shape == (1, 33, 128, 160, 3)
    np.testing.assert_allclose(np.array(tiled), np.array(untiled), rtol=1e-5, atol=1e-5)


def test_tiled_equals_untiled_for_the_ltx23_block_layout():
    """The same exactness check through 2.3's separate time-only and space-only up-blocks and a
    width-keeping compress_all: tiles still land where the untiled decode puts their pixels."""
    cfg = _ltx23_cfg(decoder_base_channels=2)
    dec = _random_decoder(cfg, 3, pointwise=True)
    latent = mx.random.normal((1, 5, 4, 5, 8), key=mx.random.key(4))
    untiled = dec(latent)
    tiling = TilingConfig(SpatialTiling(64, 32), TemporalTiling(16, 8))
    plan = plan_tiles(cfg, (5, 4, 5), tiling)
    assert len({t.group for t in plan.tiles}) == 4 and len(plan) == 4 * 3 * 4
    tiled = decode_tiled_video(dec, latent, tiling)
    assert tiled.shape == untiled.shape == (1, 33, 128, 160, 3)
    np.testing.assert_allclose(np.array(tiled), np.array(untiled), rtol=1e-5, atol=1e-5)


def test_resumed_tiled_decode_equals_uninterrupted_one():
    """A stage checkpoints after each tile: decoding the rest with start=k (fresh noise source from the
    same key) and re-adding the stored tiles gives the same video."""
    cfg = _decoder_cfg(timestep_conditioning=True)
    dec = _random_decoder(cfg, 5)
    latent = mx.random.normal((1, 3, 2, 3, 4), key=mx.random.key(6))
    plan = plan_tiles(cfg, (3, 2, 3), TilingConfig(SpatialTiling(64, 32), TemporalTiling(16, 8)))
    full = decode_tiled_video(dec, latent, plan, noise=KeyNoise(mx.random.key(7)))
    stored = []
    for tile, pixels in decode_tiles(dec, latent, plan, noise=KeyNoise(mx.random.key(7))):
        stored.append((tile, pixels))
        if tile.index == 1:
            break  # "killed" after two tiles
    blender, chunks = TileBlender(plan), []
    for tile, pixels in stored + list(decode_tiles(dec, latent, plan, noise=KeyNoise(mx.random.key(7)), start=2)):
        done = blender.add(tile, pixels)
        if done is not None:
            assert done[0] == sum(c.shape[1] for c in chunks)  # ranges come back in order, without gaps
            chunks.append(done[1])
    np.testing.assert_array_equal(np.array(mx.concatenate(chunks, axis=1)), np.array(full))
    # resuming from frames already written (nothing stored but the frames): redo the groups that reach past them
    done = plan.final_frame_after(0)
    tile0, first = plan.resume_point(done)
    blender, tail = TileBlender(plan, first_frame=first), []
    for tile, pixels in decode_tiles(dec, latent, plan, noise=KeyNoise(mx.random.key(7)), start=tile0):
        out = blender.add(tile, pixels)
        if out is not None:
            tail.append(out[1][:, max(0, done - out[0]):])
    np.testing.assert_array_equal(np.array(mx.concatenate(tail, axis=1)), np.array(full[:, done:]))


@pytest.mark.parametrize("frames,temporal", [(6, TemporalTiling(16, 8)), (7, TemporalTiling(24, 8))])
def test_resume_at_every_group_boundary_hands_back_the_uninterrupted_frames(frames, temporal):
    """Resumed from each boundary the blender hands frames back at, with nothing but the frames written: the
    rest comes back bit-identical. 16/8-frame tiles overlap the next two groups (each tile after the first
    starts a latent frame early), so the resume must redo more than the last finished group."""
    cfg = _decoder_cfg(timestep_conditioning=True)
    dec = _random_decoder(cfg, 13)
    latent = mx.random.normal((1, frames, 3, 3, 4), key=mx.random.key(14))
    plan = plan_tiles(cfg, (frames, 3, 3), TilingConfig(SpatialTiling(64, 32), temporal))
    full = np.array(decode_tiled_video(dec, latent, plan, noise=KeyNoise(mx.random.key(15))))
    total = plan.video_fhw[0]
    boundaries = sorted({plan.final_frame_after(g) for g in range(len(plan.group_frames))} - {0, total})
    assert len(boundaries) >= 2
    for done in boundaries:
        tile0, first = plan.resume_point(done)
        blender, tail = TileBlender(plan, first_frame=first), []
        for tile, pixels in decode_tiles(dec, latent, plan, noise=KeyNoise(mx.random.key(15)), start=tile0):
            out = blender.add(tile, pixels)
            if out is not None and out[0] + out[1].shape[1] > done:
                tail.append(np.array(out[1][:, max(0, done - out[0]):]))
        np.testing.assert_array_equal(np.concatenate(tail, axis=1), full[:, done:])
    assert plan.resume_point(total) == (len(plan), total)  # every frame written: nothing left to decode
    with pytest.raises(ValueError, match="not a point"):
        plan.resume_point(boundaries[0] + 1)


def test_noise_from_the_same_key_is_reproducible():
    cfg = _decoder_cfg(timestep_conditioning=True)
    dec = _random_decoder(cfg, 8)
    latent = mx.random.normal((1, 2, 2, 2, 4), key=mx.random.key(9))
    a = np.array(dec(latent, noise=KeyNoise(mx.random.key(10))))
    b = np.array(dec(latent, noise=KeyNoise(mx.random.key(10))))
    c = np.array(dec(latent, noise=KeyNoise(mx.random.key(11))))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-4
    # a tile's noise depends on (key, tile, count) only, not on what was drawn before
    k = KeyNoise(mx.random.key(12))
    first = np.array(k.for_tile(2, 4).draw((3, 5)))
    k.draw((7,))
    np.testing.assert_array_equal(np.array(KeyNoise(mx.random.key(12)).for_tile(2, 4).draw((3, 5))), first)
    with pytest.raises(ValueError, match="draws noise"):
        dec(latent)


def test_torch_noise_regeneration_matches_the_recorded_draws():
    """The parity helper that regenerates the oracle's torch noise (for fixtures that did not record
    it) reproduces every draw the official decoder made, tiles in order."""
    with np.load(TSC.with_suffix(".npz")) as z:
        z = dict(z)
    gen = TorchCPUNormal(1234)
    for a in recorded_noise(z, "tiled_out_video"):
        np.testing.assert_allclose(gen.torch_randn(a.shape), a, rtol=0, atol=1e-6)


# -- the memory plan --------------------------------------------------------------------------------
def test_tile_plan_respects_the_budget():
    cfg = _decoder_cfg(decoder_base_channels=128)  # real widths 1024 -> 128
    latent = (16, 16, 24)  # 121 frames at 512 x 768
    weights = 2 << 30
    big = choose_tiling(cfg, latent, budget_bytes=64 << 30, weight_bytes=weights)
    assert big.tiling is None and big.estimated_bytes <= 64 << 30  # everything fits: untiled
    mid = choose_tiling(cfg, latent, budget_bytes=6 << 30, weight_bytes=weights)
    small = choose_tiling(cfg, latent, budget_bytes=3 << 30, weight_bytes=weights)
    for choice, budget in ((mid, 6 << 30), (small, 3 << 30)):
        assert choice.tiling is not None and choice.estimated_bytes <= budget
        biggest = max((t.latent_fhw for t in choice.plan.tiles), key=np.prod)
        assert estimate_decode_bytes(cfg, biggest) + weights < budget
    vol = lambda c: max(int(np.prod(t.latent_fhw)) for t in c.plan.tiles)  # noqa: E731
    assert vol(small) < vol(mid)  # a smaller budget gives smaller tiles
    with pytest.raises(DecodeDoesNotFit, match="budget"):
        choose_tiling(cfg, latent, budget_bytes=weights, weight_bytes=weights)


def test_activation_estimate_bounds_the_measured_peak():
    cfg = _decoder_cfg(decoder_base_channels=4)
    dec = _random_decoder(cfg, 13)
    latent = mx.random.normal((1, 3, 3, 4, 4), key=mx.random.key(14))
    mx.eval(latent)
    mx.reset_peak_memory()
    base = mx.get_active_memory()
    mx.eval(dec(latent))
    measured = mx.get_peak_memory() - base
    est = estimate_decode_bytes(cfg, (3, 3, 4))
    assert measured <= est <= 4 * measured, (measured, est)


def test_activation_estimate_bounds_the_measured_peak_of_an_ltx23_decoder():
    """2.3's up-blocks widen the depth-to-space convolution differently (compress_all x1: 8 C channels;
    compress_time: 2 C / m; compress_space: 4 C / m): the estimate still bounds the measured peak, at a
    zero-padded 2.3 layout with two res layers per stack."""
    res = ["res_x", {"num_layers": 2, "inject_noise": False}]
    cfg = _ltx23_cfg(decoder_base_channels=8, decoder_blocks=[
        res, ["compress_space", {"multiplier": 2}], res, ["compress_time", {"multiplier": 2}], res,
        ["compress_all", {"multiplier": 1}], res, ["compress_all", {"multiplier": 2}], res])
    assert [s[3] for s in cfg.decoder_stages()] == [64, 32, 32, 32, 32, 16, 16, 8, 8]
    dec = _random_decoder(cfg, 15)
    latent = mx.random.normal((1, 3, 3, 4, 8), key=mx.random.key(16))
    mx.eval(latent)
    mx.reset_peak_memory()
    base = mx.get_active_memory()
    mx.eval(dec(latent))
    measured = mx.get_peak_memory() - base
    est = estimate_decode_bytes(cfg, (3, 3, 4))
    assert measured <= est <= 4 * measured, (measured, est)


def test_tile_plan_respects_the_budget_at_ltx23_widths():
    cfg = _ltx23_cfg(latent_channels=128, decoder_base_channels=128)  # real widths 1024 -> 128
    latent = (16, 16, 24)
    weights = 2 << 30
    choice = choose_tiling(cfg, latent, budget_bytes=3 << 30, weight_bytes=weights)
    assert choice.tiling is not None and choice.estimated_bytes <= 3 << 30
    assert choice.plan.video_fhw == (121, 512, 768)
    biggest = max((t.latent_fhw for t in choice.plan.tiles), key=np.prod)
    assert estimate_decode_bytes(cfg, biggest) + weights < 3 << 30
    with pytest.raises(DecodeDoesNotFit, match="budget"):
        choose_tiling(cfg, latent, budget_bytes=weights, weight_bytes=weights)


# -- config and loading -----------------------------------------------------------------------------
@pytest.mark.parametrize("change,needle", [
    ({"norm_layer": "group_norm"}, "norm_layer"),
    ({"dims": 2}, "dims"),
    ({"use_quant_conv": True}, "use_quant_conv"),
    ({"latent_log_var": "none"}, "latent_log_var"),
    ({"spatial_padding_mode": "circular"}, "spatial_padding_mode"),
    ({"frobnicate": 1}, "frobnicate"),
    ({"decoder_blocks": [["attn_res_x", {"num_layers": 1, "attention_head_dim": 8}]]}, "attn_res_x"),
])
def test_unsupported_config_is_refused_by_name(change, needle):
    with pytest.raises(VAEConfigError, match=needle):
        VideoVAEConfig.from_config({"vae": {"latent_channels": 4, **change}})


def test_real_ltx2_config_is_accepted():
    res5 = ["res_x", {"num_layers": 5, "inject_noise": False}]
    up = ["compress_all", {"residual": True, "multiplier": 2}]
    cfg = VideoVAEConfig.from_config({"vae": {
        "_class_name": "CausalVideoAutoencoder", "dims": 3, "in_channels": 3, "out_channels": 3, "latent_channels": 128,
        "decoder_blocks": [res5, up, res5, up, res5, up, res5], "scaling_factor": 1.0, "norm_layer": "pixel_norm",
        "patch_size": 4, "latent_log_var": "uniform", "use_quant_conv": False, "causal_decoder": False,
        "timestep_conditioning": True, "normalize_latent_channels": False}})
    assert [s[2] for s in cfg.decoder_stages()] == [1024, 1024, 512, 512, 256, 256, 128]
    assert (cfg.time_scale, cfg.space_scale, cfg.decoder_padding) == (8, 32, "reflect")
    assert cfg.video_shape((16, 16, 24)) == (121, 512, 768)


def test_real_ltx23_config_is_accepted():
    """The video VAE section of the LTX-2.3 checkpoint's config metadata."""
    res = lambda n: ["res_x", {"num_layers": n}]  # noqa: E731
    cfg = VideoVAEConfig.from_config({"vae": {
        "_class_name": "CausalVideoAutoencoder", "dims": 3, "in_channels": 3, "out_channels": 3, "latent_channels": 128,
        "encoder_blocks": [res(4), ["compress_space_res", {"multiplier": 2}], res(6), ["compress_time_res",
                           {"multiplier": 2}], res(4), ["compress_all_res", {"multiplier": 2}], res(2),
                           ["compress_all_res", {"multiplier": 1}], res(2)],
        "decoder_blocks": [res(4), ["compress_space", {"multiplier": 2}], res(6), ["compress_time", {"multiplier": 2}],
                           res(4), ["compress_all", {"multiplier": 1}], res(2), ["compress_all", {"multiplier": 2}],
                           res(2)],
        "scaling_factor": 1.0, "norm_layer": "pixel_norm", "patch_size": 4, "latent_log_var": "uniform",
        "use_quant_conv": False, "causal_decoder": False, "timestep_conditioning": False,
        "normalize_latent_channels": False, "encoder_base_channels": 128, "decoder_base_channels": 128,
        "spatial_padding_mode": "zeros"}})
    assert [(s[0], s[2], s[3]) for s in cfg.decoder_stages()] == [
        ("res_x", 1024, 1024), ("compress_all", 1024, 512), ("res_x", 512, 512), ("compress_all", 512, 512),
        ("res_x", 512, 512), ("compress_time", 512, 256), ("res_x", 256, 256), ("compress_space", 256, 128),
        ("res_x", 128, 128)]
    assert [s[3] for s in cfg.encoder_stages()] == [128, 256, 256, 512, 512, 1024, 1024, 1024, 1024]
    assert (cfg.time_scale, cfg.space_scale, cfg.encoder_scales) == (8, 32, (8, 32))
    assert (cfg.encoder_padding, cfg.decoder_padding, cfg.timestep_conditioning) == ("zeros", "zeros", False)
    assert cfg.video_shape((16, 16, 24)) == (121, 512, 768)
    dec = VideoDecoder(cfg)  # lazily built: shapes only
    # the depth-to-space convolutions: prod(stride) * width_in / multiplier output channels
    assert [b.conv.conv.weight.shape[0] for b in dec.up_blocks[1::2]] == [4096, 4096, 512, 512]


def test_decoder_bottleneck_is_the_base_width_times_the_up_block_multipliers():
    """v1.2.0 rule: conv_in widens to base x prod(multipliers), so the last up-block ends at the base width
    (1.0.0 fixed 8 x base, the same product for both released VAEs but not for e.g. a 16x16x4 one)."""
    res = ["res_x", {"num_layers": 1}]
    cfg = _decoder_cfg(decoder_base_channels=4, decoder_blocks=[
        res, ["compress_all", {"residual": True, "multiplier": 2}], res, ["compress_all", {"multiplier": 2}], res])
    assert (cfg.decoder_width, cfg.time_scale, cfg.space_scale) == (16, 4, 16)
    assert [s[3] for s in cfg.decoder_stages()] == [16, 8, 8, 4, 4]
    dec = VideoDecoder(cfg)
    assert dec.conv_in.conv.weight.shape == (16, 3, 3, 3, 4)
    assert dec.conv_out.conv.weight.shape == (48, 3, 3, 3, 4)
    # res_x_y halves the width unless told otherwise, and counts too
    cfg = _decoder_cfg(decoder_base_channels=4, decoder_blocks=[res, ["res_x_y", {}], res])
    assert (cfg.decoder_width, [s[3] for s in cfg.decoder_stages()]) == (8, [8, 4, 4])


def test_encoder_padding_falls_back_to_encoder_spatial_padding_mode():
    """v1.2.0 reads ``spatial_padding_mode`` for both halves, else ``encoder_spatial_padding_mode`` for the
    encoder only; ``decoder_spatial_padding_mode`` is not read by the official decoder."""
    cfg = VideoVAEConfig.from_config({"vae": {"encoder_spatial_padding_mode": "reflect",
                                              "decoder_spatial_padding_mode": "zeros"}})
    assert (cfg.encoder_padding, cfg.decoder_padding) == ("reflect", "reflect")
    cfg = VideoVAEConfig.from_config({"vae": {"encoder_spatial_padding_mode": "reflect",
                                              "spatial_padding_mode": "zeros"}})
    assert (cfg.encoder_padding, cfg.decoder_padding) == ("zeros", "zeros")
    with pytest.raises(VAEConfigError, match="encoder_spatial_padding_mode"):
        VideoVAEConfig.from_config({"vae": {"encoder_spatial_padding_mode": "circular"}})


@pytest.mark.parametrize("block", [["compress_time", {"multiplier": 0}], ["compress_space", {"multiplier": 1.5}],
                                   ["compress_all", {"residual": True, "multiplier": 3}]])
def test_bad_up_block_multipliers_are_refused(block):
    with pytest.raises(VAEConfigError, match="multiplier"):
        VideoVAEConfig.from_config({"vae": {"decoder_blocks": [["res_x", {"num_layers": 1}], block]}})


def test_loaders_read_only_their_part_and_are_strict(tmp_path):
    src = FIXTURES / "seed0" / "video_vae.safetensors"
    tensors = load_file(str(src))
    from ltx2.models.weights import read_header

    meta = {"config": json.dumps(read_header(src).config())}
    only_encoder = {k: v for k, v in tensors.items() if not k.startswith("vae.decoder.")}
    save_file(only_encoder, str(tmp_path / "enc.safetensors"), metadata=meta)
    enc = load_video_encoder(tmp_path / "enc.safetensors")  # no decoder tensors needed
    assert isinstance(enc, nn.Module) and len(tree_flatten(enc.parameters())) > 0
    with pytest.raises(CheckpointError, match="vae.decoder"):
        load_video_decoder(tmp_path / "enc.safetensors")
    broken = dict(tensors)
    del broken["vae.decoder.conv_out.conv.bias"]
    save_file(broken, str(tmp_path / "broken.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match="conv_out.conv.bias"):
        load_video_decoder(tmp_path / "broken.safetensors")

