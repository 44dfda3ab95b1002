"""Tiled encoding: the official ``VideoEncoder.tiled_encode`` (v1.2.0) geometry and blending, and its memory plan.

The video is cut on the LATENT grid into overlapping intervals per axis, with the splitting the decoder's tiles
use (``tiling.split_overlapping`` in space, ``tiling.split_time_causal`` in time: every temporal tile after the
first starts one latent frame early). Unlike decoding, each spatial axis is cut on its own with the full tile
size (the official ``TileSizeConfig``: H and W independent, no aspect scaling). Latent interval [a, b) reads
pixel frames [8a, 1 + 8(b - 1)) and pixels [32a, 32b); a temporal tile that starts early therefore sees the
frame 8a as its causal first frame, whose latent frame gets weight 0 in the blend.

Each tile's latent is multiplied by its three 1-D ramps (``tiling.ramp_mask``, in latent units; time's left
ramp starts from 0) and summed into the output. Where the ramps of every axis sum to one (the usual case: linear
ramps over equal overlaps), the sum is the result, as the official code skips its denominator then; otherwise
the sum is divided by the summed weights (clamped at 1e-8). One tile: the untiled encoding, bit for bit.

- ``plan_encode_tiles(cfg, video_fhw, tiling)`` -> ``EncodePlan``; ``tiled_encode(encoder, video, tiling)``.
- ``estimate_encode_bytes(cfg, video_fhw)``: peak activation bytes of one encoder call on a tile.
- ``choose_encode_tiling(cfg, video_fhw, budget, fixed_bytes)``: the largest tiles whose peak fits a budget.

Arrays are channels-last: video (B, F, H, W, 3) in [-1, 1], latent (B, F', H', W', C).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from ltx2.models.ops import conv3d_temp_bytes
from ltx2.spec.errors import DoesNotFitError

from .config import ENCODER_BLOCKS, VideoVAEConfig
from .layers import CONV_TEMP_BYTES
from .tiling import (WEIGHT_FLOOR, DENSE_SPATIAL_UP_TO, DENSE_TEMPORAL_UP_TO, Interval, SpatialTiling, TemporalTiling,
                     TileGrid, _candidate_sizes, ramp_mask, split_overlapping, split_time_causal)

# The official encode refuses overlaps below these: a convolutional VAE's zero-padded tile edges need room to be
# faded out (``_validate_overlap(min_overlap_frames=16, min_overlap_pixels=64)``).
MIN_OVERLAP_PIXELS = 64
MIN_OVERLAP_FRAMES = 16
COMPLEMENTARY_ATOL = 1e-5  # the official tolerance for "the ramps sum to one"


class EncodeTilingError(ValueError):
    """A tiling the official encoder refuses (overlap too small)."""


@dataclass(frozen=True)
class EncodeTiling:
    """Encode tiles (the official ``TileSizeConfig``): ``spatial`` cuts height and width each with the same
    tile size and overlap in pixels, independently; ``temporal`` cuts frames. None: that axis is not tiled."""

    spatial: SpatialTiling | None = None
    temporal: TemporalTiling | None = None

    def __post_init__(self) -> None:
        if self.spatial is not None and self.spatial.tile_overlap_in_pixels < MIN_OVERLAP_PIXELS:
            raise EncodeTilingError(f"spatial encode tile overlap {self.spatial.tile_overlap_in_pixels} px is below "
                                    f"the required {MIN_OVERLAP_PIXELS} px")
        if self.temporal is not None and self.temporal.tile_overlap_in_frames < MIN_OVERLAP_FRAMES:
            raise EncodeTilingError(f"temporal encode tile overlap {self.temporal.tile_overlap_in_frames} frames is "
                                    f"below the required {MIN_OVERLAP_FRAMES} frames")

    @classmethod
    def default(cls) -> EncodeTiling:
        """The official ``TileSizeConfig.default()``: 768 px tiles on each spatial axis overlapping by 64, 80-frame
        tiles overlapping by 24 (what ``video_latent_from_file`` encodes with)."""
        return cls(SpatialTiling(768, 64), TemporalTiling(80, 24))


def crop_frames(frames: int, time_scale: int) -> int:
    """The frames the encoder keeps: down to 1 + time_scale * k, as the official encoder crops."""
    return frames - (frames - 1) % time_scale


def latent_shape(cfg: VideoVAEConfig, video_fhw: tuple[int, int, int]) -> tuple[int, int, int]:
    """The latent (frames, height, width) of a video (frames cropped to 1 + 8k; sides must be multiples of 32)."""
    ts, ss = cfg.encoder_scales
    f, h, w = video_fhw
    if h % ss or w % ss:
        raise ValueError(f"encode: height and width must be multiples of {ss}, got {h}x{w}")
    if f < 1:
        raise ValueError(f"encode: a video of {f} frames")
    return (crop_frames(f, ts) - 1) // ts + 1, h // ss, w // ss


def encode_grid(cfg: VideoVAEConfig, video_fhw: tuple[int, int, int], tiling: EncodeTiling | None) -> TileGrid:
    """The official latent intervals per axis (frames, rows, columns); no tiling: one interval per axis."""
    ts, ss = cfg.encoder_scales
    f, h, w = latent_shape(cfg, video_fhw)
    axes = [[Interval(0, n, 0, 0)] for n in (f, h, w)]
    if tiling is not None and tiling.spatial is not None:
        size, overlap = tiling.spatial.tile_size_in_pixels // ss, tiling.spatial.tile_overlap_in_pixels // ss
        axes[1], axes[2] = split_overlapping(h, size, overlap), split_overlapping(w, size, overlap)
    if tiling is not None and tiling.temporal is not None:
        axes[0] = split_time_causal(f, tiling.temporal.tile_size_in_frames // ts,
                                    tiling.temporal.tile_overlap_in_frames // ts)
    return TileGrid((f, h, w), ((f - 1) * ts + 1, h * ss, w * ss), tuple(axes), ts)


@dataclass(frozen=True, eq=False)
class EncodeTile:
    index: int
    pixels: tuple[slice, slice, slice]  # (frames, rows, cols) of the video it encodes
    latent: tuple[slice, slice, slice]  # (frames, rows, cols) of the latent it adds to
    masks: tuple[np.ndarray, np.ndarray, np.ndarray]  # float32 blend weights along latent frames, rows, cols

    @property
    def video_fhw(self) -> tuple[int, int, int]:
        return tuple(s.stop - s.start for s in self.pixels)


@dataclass(frozen=True, eq=False)
class EncodePlan:
    video_fhw: tuple[int, int, int]  # the video encoded (frames cropped to 1 + 8k)
    latent_fhw: tuple[int, int, int]
    tiles: tuple[EncodeTile, ...]
    complementary: bool  # every axis's ramps sum to one: the weighted sum needs no denominator

    def __len__(self) -> int:
        return len(self.tiles)


def _axis_masks(intervals: list[Interval], from_zero: bool) -> list[np.ndarray]:
    return [ramp_mask(iv.end - iv.start, iv.left_ramp, iv.right_ramp, from_zero) for iv in intervals]


def _sums_to_one(intervals: list[Interval], masks: list[np.ndarray], length: int) -> bool:
    acc = np.zeros(length, dtype=np.float32)
    for iv, m in zip(intervals, masks):
        acc[iv.start:iv.end] += m
    return bool(np.all(np.abs(acc - 1.0) <= COMPLEMENTARY_ATOL))


def plan_encode_tiles(cfg: VideoVAEConfig, video_fhw: tuple[int, int, int],
                      tiling: EncodeTiling | None) -> EncodePlan:
    """Every tile's pixel slices, latent slices and 1-D ramps, in the official order (time-major, rows, columns)."""
    ts, ss = cfg.encoder_scales
    grid = encode_grid(cfg, video_fhw, tiling)
    t_iv, h_iv, w_iv = grid.axes
    masks = (_axis_masks(t_iv, True), _axis_masks(h_iv, False), _axis_masks(w_iv, False))
    complementary = all(_sums_to_one(iv, m, n) for iv, m, n in zip(grid.axes, masks, grid.latent_fhw))
    tiles = []
    for ti, (t, mt) in enumerate(zip(t_iv, masks[0])):
        for h, mh in zip(h_iv, masks[1]):
            for w, mw in zip(w_iv, masks[2]):
                pixels = (slice(t.start * ts, 1 + (t.end - 1) * ts), slice(h.start * ss, h.end * ss),
                          slice(w.start * ss, w.end * ss))
                latent = (slice(t.start, t.end), slice(h.start, h.end), slice(w.start, w.end))
                tiles.append(EncodeTile(len(tiles), pixels, latent, (mt, mh, mw)))
    return EncodePlan(grid.video_fhw, grid.latent_fhw, tuple(tiles), complementary)


def tiled_encode(encoder, video: mx.array, tiling: EncodeTiling | EncodePlan | None, progress=None) -> mx.array:
    """Encode (B, F, H, W, 3) tile by tile and blend: the latent (B, F', H', W', C). ``progress(done, total)`` is
    called after each tile."""
    cfg = encoder.cfg
    frames = crop_frames(video.shape[1], cfg.encoder_scales[0])
    video = video[:, :frames]
    plan = tiling if isinstance(tiling, EncodePlan) else plan_encode_tiles(cfg, tuple(video.shape[1:4]), tiling)
    if plan.video_fhw != tuple(video.shape[1:4]):
        raise ValueError(f"video of shape {tuple(video.shape)} does not match the plan's {plan.video_fhw}")
    batch = video.shape[0]
    out = mx.zeros((batch, *plan.latent_fhw, cfg.latent_channels))
    weight = None if plan.complementary else mx.zeros((1, *plan.latent_fhw, 1))
    for tile in plan.tiles:
        latent = encoder(video[:, tile.pixels[0], tile.pixels[1], tile.pixels[2]])
        mt, mh, mw = (mx.array(m) for m in tile.masks)
        mt, mh, mw = mt[None, :, None, None, None], mh[None, None, :, None, None], mw[None, None, None, :, None]
        lf, lh, lw = tile.latent
        out[:, lf, lh, lw] = out[:, lf, lh, lw] + latent * mt * mh * mw  # the official order: time, rows, columns
        if weight is not None:
            weight[:, lf, lh, lw] = weight[:, lf, lh, lw] + mt * mh * mw
        mx.eval(out, *([] if weight is None else [weight]))
        del latent
        if progress is not None:
            progress(tile.index + 1, len(plan))
    return out if weight is None else out / mx.maximum(weight, WEIGHT_FLOOR)


# -- memory -----------------------------------------------------------------------------------------------
def estimate_encode_bytes(cfg: VideoVAEConfig, video_fhw: tuple[int, int, int], batch: int = 1,
                          conv_temp_bytes: int = CONV_TEMP_BYTES, itemsize: int = 4) -> int:
    """Peak activation bytes of one encoder call on a video (tile) of (frames, height, width), its input included.

    Walks the encoder's shapes and takes the largest, over blocks, of the float32 bytes alive at the block's
    worst moment (every convolution evaluates its output before the next starts: see layers.CausalConv3d), plus
    the tile's own pixels (3 channels at full size). Measured on CPU (MLX 0.32, mx.get_peak_memory over each
    block) and rounded up, with V the block's voxels, P its zero-padded voxels (frames + 2, rows + 2, cols + 2)
    and T the convolution's unfolded-input buffer (``ops.conv3d_temp_bytes``, capped by chunking):
      - patchify + conv_in: 3 x 48 V + 48 P + 4 C V + T;
      - res block (and the output head: norm, SiLU, conv_out): 8 C V + 2 C P + T (measured 6.2-7.7 C V + C P);
      - space-to-depth downsample, C_in channels in, the time-strided ones on one repeated extra frame:
        5 C_in V + C_in P + T (measured 1.9-4.5 C_in V + C_in P).
    Weights and the blended latent are not included (see ``choose_encode_tiling``).
    """
    ts, ss = cfg.encoder_scales
    f, h, w = crop_frames(video_fhw[0], ts), video_fhw[1] // cfg.patch_size, video_fhw[2] // cfg.patch_size
    vox = lambda t, y, x: batch * t * y * x  # noqa: E731

    def conv_temp(c_in: int, t: int, y: int, x: int) -> int:
        return conv3d_temp_bytes((batch, t + 2, y + 2, x + 2, c_in), (3, 3, 3), (1, 1, 1), conv_temp_bytes, itemsize)

    patch = cfg.in_channels * cfg.patch_size ** 2
    tile_input = patch * vox(f, h, w) * itemsize
    lat = cfg.latent_channels
    peak = ((3 * patch + 4 * lat) * vox(f, h, w) + patch * vox(f + 2, h + 2, w + 2)) * itemsize \
        + conv_temp(patch, f, h, w)
    width = lat
    for name, _p, w_in, w_out in cfg.encoder_stages():
        if name in ("res_x", "res_x_y"):
            c = max(w_in, w_out)
            peak = max(peak, (8 * c * vox(f, h, w) + 2 * c * vox(f + 2, h + 2, w + 2)) * itemsize
                       + conv_temp(w_in, f, h, w))
        else:
            st, s = ENCODER_BLOCKS[name]
            f1 = f + (1 if st == 2 else 0)  # the first frame repeated so the frames halve evenly
            if name.endswith("_res"):
                peak = max(peak, (5 * w_in * vox(f1, h, w) + w_in * vox(f1 + 2, h + 2, w + 2)) * itemsize
                           + conv_temp(w_in, f1, h, w))
            else:  # a plain strided convolution (no released VAE uses one): padded input, output, buffer
                peak = max(peak, (3 * w_in * vox(f, h, w) + w_in * vox(f + 2, h + 2, w + 2)) * itemsize
                           + conv_temp(w_in, f, h, w))
            f, h, w = (f1 // st if name.endswith("_res") else (f - 1) // st + 1), h // s, w // s
        width = w_out
    peak = max(peak, (8 * width * vox(f, h, w) + 2 * width * vox(f + 2, h + 2, w + 2)) * itemsize
               + conv_temp(width, f, h, w))
    return int(peak + tile_input)


def blend_bytes(cfg: VideoVAEConfig, latent_fhw: tuple[int, int, int], batch: int = 1, itemsize: int = 4) -> int:
    """The blended latent and its weights, twice while a tile is added."""
    return 2 * (batch * cfg.latent_channels + 1) * math.prod(latent_fhw) * itemsize


@dataclass(frozen=True)
class EncodeTilingChoice:
    tiling: EncodeTiling | None  # None: encode untiled
    grid: TileGrid
    estimated_bytes: int  # fixed + activations + the blended latent


class EncodeDoesNotFit(DoesNotFitError, MemoryError):
    """Even the smallest encode tiles need more memory than the budget allows."""


def tile_video_fhw(cfg: VideoVAEConfig, latent_fhw: tuple[int, int, int]) -> tuple[int, int, int]:
    """The pixels a latent tile of (frames, height, width) reads."""
    ts, ss = cfg.encoder_scales
    f, h, w = latent_fhw
    return (f - 1) * ts + 1, h * ss, w * ss


def encode_need(cfg: VideoVAEConfig, grid: TileGrid, batch: int = 1, itemsize: int = 4) -> int:
    """Activation bytes of a tiled encode: its largest tile's peak (``itemsize``: at the encoder's compute
    precision) plus the blended latent (float32 whatever it is)."""
    return estimate_encode_bytes(cfg, tile_video_fhw(cfg, grid.biggest), batch, itemsize=itemsize) + \
        blend_bytes(cfg, grid.latent_fhw, batch)


SMALLEST_SPATIAL = 96  # the smallest tile that can overlap by 64 px
SMALLEST_TEMPORAL = 24  # the smallest tile that can overlap by 16 frames


def _temporal(size: int) -> TemporalTiling:
    """Frames overlapping by the official 24, or by the required 16 where the tile is too short for 24."""
    return TemporalTiling(size, 24 if size > 24 else MIN_OVERLAP_FRAMES)


def smallest_encode_tiling() -> EncodeTiling:
    return EncodeTiling(SpatialTiling(SMALLEST_SPATIAL, MIN_OVERLAP_PIXELS), _temporal(SMALLEST_TEMPORAL))


def choose_encode_tiling(cfg: VideoVAEConfig, video_fhw: tuple[int, int, int], budget_bytes: int, fixed_bytes: int,
                         batch: int = 1, itemsize: int = 4) -> EncodeTilingChoice:
    """The tiling with the largest tiles (least encoding work) whose estimated peak fits ``budget_bytes``.

    Peak = ``fixed_bytes`` (weights, the process, the decoded video the stage holds) + the largest tile's
    activations (``estimate_encode_bytes``) + the blended latent; untiled when the whole encode fits. Candidates:
    every multiple of 32 px from 96 (overlapping by the required 64 px) and of 8 frames from 24 (overlapping by
    the official 24 frames, or 16 for 24-frame tiles), or untiled along space / time; above 1024 px / 256 frames
    only a geometric series of sizes. Work is the latent voxels the tiles encode (overlaps counted each time); ties
    go to fewer tiles. ``itemsize``: bytes per activation at the encoder's compute precision.
    """
    untiled = encode_grid(cfg, video_fhw, None)
    need = fixed_bytes + encode_need(cfg, untiled, batch, itemsize)
    if need <= budget_bytes:
        return EncodeTilingChoice(None, untiled, need)
    ts, ss = cfg.encoder_scales
    f, h, w = untiled.video_fhw
    spatial = [None] + [SpatialTiling(s, MIN_OVERLAP_PIXELS)
                        for s in _candidate_sizes(SMALLEST_SPATIAL, max(h, w), ss, DENSE_SPATIAL_UP_TO)]
    temporal = [None] + [_temporal(t) for t in _candidate_sizes(SMALLEST_TEMPORAL, f - 1, ts, DENSE_TEMPORAL_UP_TO)]
    space_axes = {sp: encode_grid(cfg, video_fhw, EncodeTiling(sp, None)).axes[1:] for sp in spatial}
    time_axes = {tp: encode_grid(cfg, video_fhw, EncodeTiling(None, tp)).axes[0] for tp in temporal}
    best, smallest = None, None
    for sp in spatial:
        for tp in temporal:
            grid = TileGrid(untiled.latent_fhw, untiled.video_fhw, (time_axes[tp], *space_axes[sp]), ts)
            need = fixed_bytes + encode_need(cfg, grid, batch, itemsize)
            if smallest is None or need < smallest[0]:
                smallest = (need, EncodeTiling(sp, tp))
            if need <= budget_bytes:
                key = (grid.work, len(grid))
                if best is None or key < best[0]:
                    best = (key, EncodeTiling(sp, tp), grid, need)
    if best is None:
        need, tiling = smallest
        raise EncodeDoesNotFit(
            f"encoding a video of {video_fhw} needs at least {need / 2**30:.2f} GiB even with the smallest tiles "
            f"({tiling}); the budget is {budget_bytes / 2**30:.2f} GiB, of which {fixed_bytes / 2**30:.2f} GiB are "
            "weights and buffers: raise the budget or encode a shorter / smaller clip.")
    _, tiling, grid, need = best
    return EncodeTilingChoice(tiling, grid, need)
