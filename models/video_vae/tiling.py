"""Tiled decoding: the official tile geometry and blending, decodable one tile at a time.

A latent is cut into overlapping tiles in space and time, each tile is decoded on its own, and the
decoded tiles are blended with linear ramps over the overlaps (weights summed, then divided), as
the official ``VideoDecoder.tiled_decode`` does. Tile sizes are given in pixels and frames
(``TilingConfig``) and turned into latent intervals exactly as the official code does, including
its quirks: the short spatial axis gets a proportionally smaller tile, and every temporal tile but
the first starts one latent frame early (the decoder's first output frame of a tile is causal
padding) with a ramp one step longer.

The pieces, from low to high level:
- ``plan_tiles(cfg, latent_fhw, tiling)`` -> ``TilePlan``: every tile's latent slices, pixel
  slices and 1-D blend masks, in the official order (time-major, then rows, then columns).
- ``decode_tiles(decoder, latent, plan, ...)`` yields ``(tile, pixels)`` one decoded tile at a
  time; a stage can checkpoint after each and resume with ``start=`` (``TilePlan.resume_point``
  says where, given the frames already written).
- ``TileBlender`` accumulates tiles and returns each frame range as soon as no later tile touches it.
- ``tiled_decode`` / ``decode_tiled_video`` chain the two.
- ``choose_tiling(cfg, latent_fhw, budget_bytes, weight_bytes)`` picks the largest tiles (least
  decoding work) whose estimated peak memory (``estimate_decode_bytes`` + blender) fits a budget.

All arrays are channels-last: latents (B, F', H', W', C), video (B, F, H, W, 3).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import mlx.core as mx
import numpy as np

from ltx2.models.ops import conv3d_temp_bytes
from ltx2.spec.errors import DoesNotFitError

from .config import VideoVAEConfig
from .layers import CONV_TEMP_BYTES
from .noise import NoiseSource

WEIGHT_FLOOR = 1e-8  # the official clamp on summed blend weights


# -- configuration (units: pixels and frames, as the official TilingConfig) ----------------------
@dataclass(frozen=True)
class SpatialTiling:
    tile_size_in_pixels: int
    tile_overlap_in_pixels: int = 0

    def __post_init__(self) -> None:
        s, o = self.tile_size_in_pixels, self.tile_overlap_in_pixels
        if s < 64 or s % 32:
            raise ValueError(f"spatial tile size must be a multiple of 32 and at least 64 pixels, got {s}")
        if o % 32 or o < 0 or o >= s:
            raise ValueError(f"spatial tile overlap must be a multiple of 32 below the tile size ({s}), got {o}")


@dataclass(frozen=True)
class TemporalTiling:
    tile_size_in_frames: int
    tile_overlap_in_frames: int = 0

    def __post_init__(self) -> None:
        s, o = self.tile_size_in_frames, self.tile_overlap_in_frames
        if s < 16 or s % 8:
            raise ValueError(f"temporal tile size must be a multiple of 8 and at least 16 frames, got {s}")
        if o % 8 or o < 0 or o >= s:
            raise ValueError(f"temporal tile overlap must be a multiple of 8 below the tile size ({s}), got {o}")


@dataclass(frozen=True)
class TilingConfig:
    spatial: SpatialTiling | None = None
    temporal: TemporalTiling | None = None

    @classmethod
    def default(cls) -> TilingConfig:
        """The official default: 512 px tiles overlapping by 64, 64-frame tiles overlapping by 24."""
        return cls(SpatialTiling(512, 64), TemporalTiling(64, 24))


# -- latent intervals -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Interval:
    start: int
    end: int
    left_ramp: int
    right_ramp: int


def split_overlapping(length: int, size: int, overlap: int) -> list[Interval]:
    """Cut [0, length) into tiles of ``size`` advancing by ``size - overlap``; the last one is cut short."""
    if length <= size:
        return [Interval(0, length, 0, 0)]
    step = size - overlap
    count = (length + size - 2 * overlap - 1) // step
    out = []
    for i in range(count):
        start = i * step
        end = length if i == count - 1 else start + size
        out.append(Interval(start, end, overlap if i else 0, overlap if i < count - 1 else 0))
    return out


def split_time_causal(length: int, size: int, overlap: int) -> list[Interval]:
    """As split_overlapping, but every tile after the first starts one latent frame earlier.

    A tile's first latent frame decodes to a single frame (causal start), so starting one frame
    early gives the tile a real first frame to blend; its ramp grows by one to cover it.
    """
    if length <= size:
        return [Interval(0, length, 0, 0)]
    tiles = split_overlapping(length, size, overlap)
    return [t if i == 0 else Interval(t.start - 1, t.end, t.left_ramp + 1, t.right_ramp) for i, t in enumerate(tiles)]


def ramp_mask(length: int, left: int, right: int, left_from_zero: bool) -> np.ndarray:
    """1-D blend weights: 1 in the middle, linear fade over ``left`` / ``right`` samples.

    Ramps exclude their end points (weights in (0, 1)), except that a left ramp with
    ``left_from_zero`` starts at exactly 0 (used for time, whose first tile frame is causal padding).
    """
    left, right = max(0, min(left, length)), max(0, min(right, length))
    mask = np.ones(length, dtype=np.float64)
    if left:
        ramp = np.linspace(0.0, 1.0, left + 1)[:-1] if left_from_zero else np.linspace(0.0, 1.0, left + 2)[1:-1]
        mask[:left] *= ramp
    if right:
        mask[length - right:] *= np.linspace(1.0, 0.0, right + 2)[1:-1]
    return mask.astype(np.float32)


# -- the plan --------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class DecodeTile:
    index: int
    group: int  # temporal group: the tiles sharing one frame range, decoded consecutively
    latent: tuple[slice, slice, slice]  # (frames, rows, cols) of the latent it decodes
    pixels: tuple[slice, slice, slice]  # (frames, rows, cols) of the video its output covers
    masks: tuple[np.ndarray, np.ndarray, np.ndarray]  # blend weights along frames, rows, cols

    @property
    def latent_fhw(self) -> tuple[int, int, int]:
        return tuple(s.stop - s.start for s in self.latent)

    def blend_mask(self) -> mx.array:
        """(1, F, H, W, 1): the separable product of the three 1-D masks."""
        t, h, w = (mx.array(m) for m in self.masks)
        return (t[:, None, None] * h[None, :, None] * w[None, None, :])[None, ..., None]


@dataclass(frozen=True, eq=False)
class TilePlan:
    latent_fhw: tuple[int, int, int]
    video_fhw: tuple[int, int, int]
    tiles: tuple[DecodeTile, ...]
    group_frames: tuple[slice, ...] = field(default=())  # frame range of each temporal group

    def __len__(self) -> int:
        return len(self.tiles)

    def final_frame_after(self, group: int) -> int:
        """Frames before this index are final once every tile of ``group`` (and earlier) is added."""
        return self.group_frames[group + 1].start if group + 1 < len(self.group_frames) else self.video_fhw[0]

    def is_last_of_group(self, tile: DecodeTile) -> bool:
        return tile.index == len(self.tiles) - 1 or self.tiles[tile.index + 1].group != tile.group

    def resume_point(self, frames_done: int) -> tuple[int, int]:
        """Where to restart a decode whose first ``frames_done`` frames were already handed back, so that
        it hands back exactly (bit for bit) the frames an uninterrupted decode would.

        ``frames_done`` is a boundary the blender returns at (after some group g). At that point an
        uninterrupted blender still holds, for the frames from ``frames_done`` on, what every group
        up to g whose frames reach past it has added: with the causal one-frame-early start, that can
        be several groups, not only g. So the decode restarts at the first group reaching past
        ``frames_done``, into a blender starting at that group's first frame: every frame from
        ``frames_done`` on then receives the same tiles, added in the same order from zero, as in the
        uninterrupted decode. The frames before ``frames_done`` come back again (incomplete) and are
        dropped by the caller. Returns (first tile to decode, first frame for
        ``TileBlender(plan, first_frame=...)``); (len(plan), frame count) when every frame is done.
        """
        total = self.video_fhw[0]
        if frames_done == 0:
            return 0, 0
        if frames_done == total:
            return len(self.tiles), total
        if not any(self.final_frame_after(g) == frames_done for g in range(len(self.group_frames))):
            raise ValueError(f"{frames_done} frames is not a point a tiled decode of this plan hands frames back at")
        g0 = next(g for g, frames in enumerate(self.group_frames) if frames.stop > frames_done)
        return next(t.index for t in self.tiles if t.group == g0), self.group_frames[g0].start


def plan_tiles(cfg: VideoVAEConfig, latent_fhw: tuple[int, int, int], tiling: TilingConfig | None) -> TilePlan:
    """The official tile geometry for a latent of (frames, height, width); no tiling -> one tile."""
    ts, ss = cfg.time_scale, cfg.space_scale
    t_iv, h_iv, w_iv = tile_grid(cfg, latent_fhw, tiling).axes

    def time_pixels(iv: Interval) -> tuple[slice, np.ndarray]:
        # latent frames [a, b) decode to 1 + (b - 1 - a) * ts frames starting at a * ts
        start, stop = iv.start * ts, 1 + (iv.end - 1) * ts
        left = 0 if iv.left_ramp == 0 else 1 + (iv.left_ramp - 1) * ts
        return slice(start, stop), ramp_mask(stop - start, left, iv.right_ramp * ts, left_from_zero=True)

    def space_pixels(iv: Interval) -> tuple[slice, np.ndarray]:
        start, stop = iv.start * ss, iv.end * ss
        return slice(start, stop), ramp_mask(stop - start, iv.left_ramp * ss, iv.right_ramp * ss, False)

    tiles, groups = [], []
    for g, ti in enumerate(t_iv):
        tp, tm = time_pixels(ti)
        groups.append(tp)
        for hi in h_iv:
            hp, hm = space_pixels(hi)
            for wi in w_iv:
                wp, wm = space_pixels(wi)
                tiles.append(DecodeTile(len(tiles), g, (slice(ti.start, ti.end), slice(hi.start, hi.end),
                                                        slice(wi.start, wi.end)), (tp, hp, wp), (tm, hm, wm)))
    return TilePlan(tuple(latent_fhw), cfg.video_shape(tuple(latent_fhw)), tuple(tiles), tuple(groups))


# -- decoding and blending ---------------------------------------------------------------------------
def decode_tiles(decoder, latent: mx.array, plan: TilePlan, timestep: float | mx.array | None = None,
                 noise: NoiseSource | None = None, start: int = 0) -> Iterator[tuple[DecodeTile, mx.array]]:
    """Decode the plan's tiles from ``start`` on, one at a time: yields (tile, decoded pixels (B, F, H, W, C)).

    Tile i draws its noise from ``noise.for_tile(i, len(plan))``: with KeyNoise that depends only on
    the key and i, so a resumed decode draws the same noise as an uninterrupted one.
    """
    if tuple(latent.shape[1:4]) != plan.latent_fhw:
        raise ValueError(f"latent of shape {tuple(latent.shape)} does not match the plan's {plan.latent_fhw}")
    for tile in plan.tiles[start:]:
        src = noise.for_tile(tile.index, len(plan)) if noise is not None else None
        out = decoder(latent[:, tile.latent[0], tile.latent[1], tile.latent[2]], timestep, src)
        mx.eval(out)
        expect = tuple(s.stop - s.start for s in tile.pixels)
        if tuple(out.shape[1:4]) != expect:
            raise RuntimeError(f"tile {tile.index} decoded to {tuple(out.shape[1:4])}, the plan expects {expect}")
        yield tile, out


class TileBlender:
    """Blends decoded tiles into the video and releases frames once no later tile can touch them.

    Each tile adds pixels * mask to a running sum and mask to a running weight; a finished frame is
    sum / max(weight, 1e-8). Only frames from the current temporal group on are held.
    """

    def __init__(self, plan: TilePlan, first_frame: int = 0):
        self.plan = plan
        self._first = first_frame  # video frame index of the first pending frame (see TilePlan.resume_point)
        self._sum: mx.array | None = None
        self._weight: mx.array | None = None

    @property
    def next_frame(self) -> int:
        """The first frame not yet returned."""
        return self._first

    def _grow(self, stop: int, batch: int, channels: int) -> None:
        _, h, w = self.plan.video_fhw
        have = 0 if self._sum is None else self._sum.shape[1]
        need = stop - self._first - have
        if need <= 0:
            return
        zs, zw = mx.zeros((batch, need, h, w, channels)), mx.zeros((1, need, h, w, 1))
        self._sum = zs if self._sum is None else mx.concatenate([self._sum, zs], axis=1)
        self._weight = zw if self._weight is None else mx.concatenate([self._weight, zw], axis=1)

    def add(self, tile: DecodeTile, pixels: mx.array) -> tuple[int, mx.array] | None:
        """Add one decoded tile; returns (first frame index, finished frames) when a range completes."""
        ft, hs, ws = tile.pixels
        if ft.start < self._first:
            raise ValueError(f"tile {tile.index} covers frame {ft.start}, already returned (tiles out of order?)")
        self._grow(ft.stop, pixels.shape[0], pixels.shape[-1])
        mask = tile.blend_mask()
        t = slice(ft.start - self._first, ft.stop - self._first)
        self._sum[:, t, hs, ws] = self._sum[:, t, hs, ws] + pixels * mask
        self._weight[:, t, hs, ws] = self._weight[:, t, hs, ws] + mask
        mx.eval(self._sum, self._weight)
        if not self.plan.is_last_of_group(tile):
            return None
        n = self.plan.final_frame_after(tile.group) - self._first
        done = self._sum[:, :n] / mx.maximum(self._weight[:, :n], WEIGHT_FLOOR)
        first = self._first
        self._sum, self._weight = self._sum[:, n:], self._weight[:, n:]
        mx.eval(done, self._sum, self._weight)
        self._first += n
        return first, done


def tiled_decode(decoder, latent: mx.array, tiling: TilingConfig | TilePlan | None,
                 timestep: float | mx.array | None = None,
                 noise: NoiseSource | None = None) -> Iterator[tuple[int, mx.array]]:
    """Decode tile by tile and yield (first frame index, frames) as each frame range is finished."""
    plan = tiling if isinstance(tiling, TilePlan) else plan_tiles(decoder.cfg, tuple(latent.shape[1:4]), tiling)
    blender = TileBlender(plan)
    for tile, pixels in decode_tiles(decoder, latent, plan, timestep, noise):
        done = blender.add(tile, pixels)
        if done is not None:
            yield done


def decode_tiled_video(decoder, latent: mx.array, tiling: TilingConfig | TilePlan | None,
                       timestep: float | mx.array | None = None, noise: NoiseSource | None = None) -> mx.array:
    """The whole video from a tiled decode (holds it all; prefer ``tiled_decode`` for long videos)."""
    return mx.concatenate([frames for _, frames in tiled_decode(decoder, latent, tiling, timestep, noise)], axis=1)


# -- memory -------------------------------------------------------------------------------------------
def estimate_decode_bytes(cfg: VideoVAEConfig, latent_fhw: tuple[int, int, int], batch: int = 1,
                          conv_temp_bytes: int = CONV_TEMP_BYTES, itemsize: int = 4) -> int:
    """Peak activation bytes of one decoder call (one tile) on a latent of (frames, height, width).

    Walks the decoder's shapes and takes the largest, over blocks, of the float32 bytes alive at the
    block's worst moment. Every convolution evaluates its output before the next one starts (see
    layers.CausalConv3d), so blocks and convolutions do not overlap; what is alive is the block's
    input, the not-yet-freed intermediates MLX has already allocated ahead (norm, SiLU, the padding
    copies), the convolution's output and its unfolded-input buffer (``ops.conv3d_temp_bytes``,
    capped by chunking). Measured on CPU (MLX 0.32) and rounded up, in units of C*V (width x voxels):
      - res block: 11 C V + conv buffer;
      - upsampling block (C -> K = prod(stride) C / reduction channels at V voxels before the
        depth-to-space): 2 C V + 4 K V + conv buffer;
      - output head (norm, modulation, SiLU, conv to 3*16 channels, unpatchify): 4 C V + 3 * 48 V
        + conv buffer.
    Weights and the blender's frame buffers are not included (see ``choose_tiling``).
    """
    f, h, w = latent_fhw
    vox = lambda t, y, x: batch * t * y * x  # noqa: E731

    def conv_temp(c_in: int, t: int, y: int, x: int) -> int:
        return conv3d_temp_bytes((batch, t + 2, y + 2, x + 2, c_in), (3, 3, 3), (1, 1, 1), conv_temp_bytes, itemsize)

    width = cfg.decoder_width
    peak = (cfg.latent_channels * 3 + width * 2) * vox(f, h, w) * itemsize + conv_temp(cfg.latent_channels, f, h, w)
    for name, _p, w_in, w_out in cfg.decoder_stages():
        v = vox(f, h, w)
        if name in ("res_x", "res_x_y"):
            peak = max(peak, 11 * max(w_in, w_out) * v * itemsize + conv_temp(w_in, f, h, w))
            continue
        st = {"compress_time": (2, 1), "compress_space": (1, 2), "compress_all": (2, 2)}[name]
        k = st[0] * st[1] * st[1] * w_out
        peak = max(peak, (2 * w_in + 4 * k) * v * itemsize + conv_temp(w_in, f, h, w))
        f, h, w = f * st[0] - (st[0] - 1), h * st[1], w * st[1]
    width = cfg.decoder_stages()[-1][3] if cfg.decoder_blocks else width
    head = cfg.out_channels * cfg.patch_size ** 2
    v = vox(f, h, w)
    peak = max(peak, (4 * width + 3 * head) * v * itemsize + conv_temp(width, f, h, w))
    return int(peak)


def blender_bytes(plan: TilePlan | TileGrid, batch: int = 1, channels: int = 3, itemsize: int = 4) -> int:
    """The blender's buffers at their largest: one temporal group's frames of running sum (batch x
    channels) and weight (1 channel), twice while a tile is added, plus one finished range handed back."""
    _, h, w = plan.video_fhw
    longest = max(g.stop - g.start for g in plan.group_frames)
    return (2 * (batch * channels + 1) + batch * channels) * longest * h * w * itemsize


@dataclass(frozen=True)
class TilingChoice:
    tiling: TilingConfig | None  # None: decode untiled
    plan: TilePlan
    estimated_bytes: int  # weights + activations + output buffers


class DecodeDoesNotFit(DoesNotFitError, MemoryError):
    """Even the smallest tiles need more memory than the budget allows."""


def _overlap(size: int, default: int, unit: int) -> int:
    return min(default, (size // 2) // unit * unit)


@dataclass(frozen=True)
class TileGrid:
    """A tiling's latent intervals along each axis, without the tiles' masks: what the memory estimate and the
    tile search need, at a cost linear in the axes' lengths however many tiles (their product) there are.
    ``plan_tiles`` makes its tiles from these intervals (time-major, then rows, then columns)."""

    latent_fhw: tuple[int, int, int]
    video_fhw: tuple[int, int, int]
    axes: tuple[list[Interval], list[Interval], list[Interval]]  # frames, rows, columns
    time_scale: int

    def __len__(self) -> int:
        return math.prod(len(a) for a in self.axes)

    @property
    def biggest(self) -> tuple[int, int, int]:
        """The largest tile's latent (frames, height, width): every combination of intervals is a tile."""
        return tuple(max(iv.end - iv.start for iv in a) for a in self.axes)

    @property
    def work(self) -> int:
        """Latent voxels decoded in all (overlaps counted each time they are decoded)."""
        return math.prod(sum(iv.end - iv.start for iv in a) for a in self.axes)

    @property
    def group_frames(self) -> tuple[slice, ...]:
        """The video frames each temporal group covers (as ``TilePlan.group_frames``)."""
        ts = self.time_scale
        return tuple(slice(iv.start * ts, 1 + (iv.end - 1) * ts) for iv in self.axes[0])


def tile_grid(cfg: VideoVAEConfig, latent_fhw: tuple[int, int, int], tiling: TilingConfig | None) -> TileGrid:
    """The official tile intervals for a latent of (frames, height, width); no tiling -> one interval per axis."""
    f, h, w = latent_fhw
    ts, ss = cfg.time_scale, cfg.space_scale
    whole = lambda n: [Interval(0, n, 0, 0)]  # noqa: E731
    t_iv, h_iv, w_iv = whole(f), whole(h), whole(w)
    if tiling is not None and tiling.spatial is not None:
        size = tiling.spatial.tile_size_in_pixels // ss
        overlap = tiling.spatial.tile_overlap_in_pixels // ss
        long_side = max(h, w)
        # the shorter axis gets a proportionally shorter tile (never below overlap + 1, nor 2)
        per_axis = lambda n: max(max(2, overlap + 1), round(size * n / long_side))  # noqa: E731
        h_iv = split_overlapping(h, per_axis(h), overlap)
        w_iv = split_overlapping(w, per_axis(w), overlap)
    if tiling is not None and tiling.temporal is not None:
        t_iv = split_time_causal(f, tiling.temporal.tile_size_in_frames // ts,
                                 tiling.temporal.tile_overlap_in_frames // ts)
    return TileGrid(tuple(latent_fhw), cfg.video_shape(tuple(latent_fhw)), (t_iv, h_iv, w_iv), ts)


# Tile sizes the search tries: every step up to these, then a geometric series (each ~1.25x the last), so the
# search stays a few thousand cheap evaluations however large the video (a 4K, 1001-frame one included).
DENSE_SPATIAL_UP_TO = 1024  # pixels
DENSE_TEMPORAL_UP_TO = 256  # frames
GEOMETRIC_STEP = 1.25


def _candidate_sizes(smallest: int, largest: int, unit: int, dense_up_to: int) -> list[int]:
    """Every multiple of ``unit`` from ``smallest`` to ``min(largest, dense_up_to)``, then sizes growing by
    ``GEOMETRIC_STEP`` (rounded up to ``unit``) while they stay <= ``largest``."""
    sizes = list(range(smallest, min(largest, dense_up_to) + 1, unit))
    size = sizes[-1] if sizes else largest
    while True:
        size = max(size + unit, math.ceil(size * GEOMETRIC_STEP / unit) * unit)
        if size > largest:
            return sizes
        sizes.append(size)


def choose_tiling(cfg: VideoVAEConfig, latent_fhw: tuple[int, int, int], budget_bytes: int, weight_bytes: int,
                  batch: int = 1, overhead_bytes: int = 256 << 20, itemsize: int = 4) -> TilingChoice:
    """The tiling with the largest tiles (least decoding work) whose estimated peak fits ``budget_bytes``.

    Peak = weights + ``overhead_bytes`` (interpreter, MLX runtime) + the largest tile's activations
    (``estimate_decode_bytes``) + the blender's frame buffers; untiled (the least work) when the
    whole decode fits. Candidates: tiles of every multiple of 32 px from 64 and of 8 frames from 16,
    or untiled along space / time, overlapping by the official default 64 px / 24 frames or half the
    tile when that is smaller (above 1024 px / 256 frames only a geometric series of sizes: the search is
    bounded). The work of a plan is the latent voxels its tiles decode in total (overlaps count twice), so
    bigger tiles win; ties go to fewer tiles. Candidates are weighed on their intervals (``tile_grid``); only
    the chosen one is made into a plan. ``itemsize``: bytes per activation at the decoder's compute precision
    (the blender sums in float32 whatever it is).
    """
    fixed = weight_bytes + overhead_bytes
    f, h, w = latent_fhw
    video_f, video_h, video_w = cfg.video_shape(latent_fhw)
    # untiled: the decoder's output plus the frames handed on (a copy), no blender
    untiled = fixed + estimate_decode_bytes(cfg, latent_fhw, batch, itemsize=itemsize) + 2 * batch * \
        cfg.out_channels * video_f * video_h * video_w * itemsize
    if untiled <= budget_bytes:
        return TilingChoice(None, plan_tiles(cfg, latent_fhw, None), untiled)
    ss, ts = cfg.space_scale, cfg.time_scale
    spatial = [None] + [SpatialTiling(s, _overlap(s, 64, 32))
                        for s in _candidate_sizes(64, max(h, w) * ss, 32, DENSE_SPATIAL_UP_TO)]
    temporal = [None] + [TemporalTiling(t, _overlap(t, 24, 8))
                         for t in _candidate_sizes(16, (f - 1) * ts, 8, DENSE_TEMPORAL_UP_TO)]
    space_axes = {sp: tile_grid(cfg, latent_fhw, TilingConfig(sp, None)).axes[1:] for sp in spatial}
    time_axes = {tp: tile_grid(cfg, latent_fhw, TilingConfig(None, tp)).axes[0] for tp in temporal}
    best, smallest = None, None
    for sp in spatial:
        for tp in temporal:
            tiling = TilingConfig(sp, tp)
            grid = TileGrid(tuple(latent_fhw), (video_f, video_h, video_w), (time_axes[tp], *space_axes[sp]), ts)
            need = fixed + estimate_decode_bytes(cfg, grid.biggest, batch, itemsize=itemsize) + \
                blender_bytes(grid, batch, cfg.out_channels)
            if smallest is None or need < smallest[0]:
                smallest = (need, tiling)
            if need <= budget_bytes:
                key = (grid.work, len(grid))
                if best is None or key < best[0]:
                    best = (key, tiling, need)
    if best is None:
        need, tiling = smallest
        raise DecodeDoesNotFit(
            f"decoding a latent of {latent_fhw} needs at least {need / 2**30:.2f} GiB even with the smallest tiles "
            f"({tiling}); the budget is {budget_bytes / 2**30:.2f} GiB. Weights alone take {weight_bytes / 2**30:.2f} "
            f"GiB: raise the budget or decode a shorter / smaller latent.")
    _, tiling, need = best
    return TilingChoice(tiling, plan_tiles(cfg, latent_fhw, tiling), need)
