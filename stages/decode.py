"""decode: latents.zarr -> frames.zarr (uint8 RGB), tiled when asked, resumable per finished frame range.

Frames are streamed into the artifact in time order as the tile blender finishes each temporal
group; a checkpoint after each makes them durable, so a killed (or disk-full) decode continues from
the last checkpoint: the groups that overlap the frames still to write are decoded again, the frames
already written are kept, and the result is bit-identical to an uninterrupted decode.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import mlx.core as mx
from pydantic import Field

from ltx2.models.video_vae import (VIDEO_DECODER_KEYMAP, DecodeDoesNotFit, KeyNoise, SpatialTiling, TemporalTiling,
                                   TileBlender, TilePlan, TilingConfig, VideoVAEConfig, choose_tiling, decode_tiles,
                                   estimate_decode_bytes, load_video_decoder, plan_tiles)
from ltx2.models.video_vae.tiling import blender_bytes, tile_grid
from ltx2.models.weights.source import open_source
from ltx2.spec.layout import CHECKPOINT_PARTS
from ltx2.spec.precision import Compute

from .contract import PROCESS_BASELINE_BYTES, BadInput, DoesNotFit, MemoryPlan
from .memory import cached_header, compute_bytes, compute_of, weight_bytes
from .params import Tiles, compute_field
from .registry import Port, PredictedOutput, StageContext, StageDef, StageParams
from .sampling import noise_key

DECODER_PREFIXES = CHECKPOINT_PARTS["video_decoder"]

# The smallest tiles the tile search tries: when even they do not fit, nothing does.
SMALLEST_TILES = Tiles(spatial_tile=64, spatial_overlap=32, temporal_tile=16, temporal_overlap=8)


class Params(StageParams):
    tiling: Tiles | None = Field(None, description="decode tiles {spatial_tile, spatial_overlap, temporal_tile, "
                                                   "temporal_overlap} (pixels, frames); none: untiled")
    seed: int | None = Field(None, ge=0, description="noise seed of a timestep-conditioned VAE (default: the "
                                                     "latents' seed)")
    compute: Compute = compute_field()


def resolve(inputs: Mapping[str, Any], p: Params) -> Params:
    return p if p.seed is not None else p.model_copy(update={"seed": inputs["latents"].params.get("seed", 0)})


def tiling_config(t: Tiles | None) -> TilingConfig | None:
    if t is None:
        return None
    sp = SpatialTiling(t.spatial_tile, t.spatial_overlap) if t.spatial_tile else None
    tp = TemporalTiling(t.temporal_tile, t.temporal_overlap) if t.temporal_tile else None
    return TilingConfig(sp, tp) if (sp or tp) else None


def tiles_of(tiling: TilingConfig | None) -> Tiles | None:
    """A TilingConfig -> the ``tiling`` parameter."""
    if tiling is None:
        return None
    out: dict[str, int] = {}
    if tiling.spatial:
        out.update(spatial_tile=tiling.spatial.tile_size_in_pixels, spatial_overlap=tiling.spatial.tile_overlap_in_pixels)
    if tiling.temporal:
        out.update(temporal_tile=tiling.temporal.tile_size_in_frames,
                   temporal_overlap=tiling.temporal.tile_overlap_in_frames)
    return Tiles(**out) if out else None


def vae_config(ctx: StageContext) -> VideoVAEConfig:
    """The checkpoint's video VAE config; one this decoder cannot run is bad input (refused when planned)."""
    ckpt = ctx.weights["checkpoint"]
    try:
        return VideoVAEConfig.from_config(cached_header(ckpt).config()["vae"])
    except (ValueError, KeyError) as e:
        raise BadInput(f"decode: the video VAE config of {ckpt} is not supported: {e}; use an LTX-2 checkpoint "
                       "(`ltx2 weights check FILE` says what it is)") from e


def _grid(ctx: StageContext):
    """The tiling's intervals: all the planning hooks need, cheap however many tiles (a plan's masks are not)."""
    cfg = vae_config(ctx)
    _, c, f, h, w = ctx.inputs["latents"].shape("video")
    if c != cfg.latent_channels:
        raise BadInput(f"decode: the latents have {c} channels, the checkpoint's VAE decodes {cfg.latent_channels}")
    try:
        tiling = tiling_config(ctx.params.tiling)
        return cfg, tile_grid(cfg, (f, h, w), tiling), tiling
    except (ValueError, KeyError) as e:
        raise BadInput(f"decode: tiling {ctx.params.tiling}: {e}") from e


def _plan(ctx: StageContext):
    cfg, grid, tiling = _grid(ctx)
    return cfg, plan_tiles(cfg, grid.latent_fhw, tiling), tiling


def _weight_copy_bytes(checkpoint, itemsize: int = 4) -> int:
    """The contiguous copy MLX's convolution makes of a decoder weight per call (none for a file that stores
    MLX's layout, as a converted one does), at the compute width (``itemsize``)."""
    return open_source(checkpoint, VIDEO_DECODER_KEYMAP).conv_copy_bytes(itemsize)


def held_weight_bytes(checkpoint, itemsize: int = 4) -> int:
    """What the decoder's weights take besides the activations: its weights at the compute width (they are held
    in it) and one conv-weight copy."""
    return weight_bytes(checkpoint, DECODER_PREFIXES, bytes_per_element=itemsize) + _weight_copy_bytes(checkpoint,
                                                                                                    itemsize)


def check(ctx: StageContext) -> None:
    _grid(ctx)


def estimate(ctx: StageContext) -> MemoryPlan:
    """Weights and activations at the compute width; the blender's running sums stay float32."""
    cfg, grid, _ = _grid(ctx)
    b = compute_bytes(ctx)
    acts = estimate_decode_bytes(cfg, grid.biggest, itemsize=b) + blender_bytes(grid, 1, cfg.out_channels)
    ckpt = ctx.weights["checkpoint"]
    return MemoryPlan(weight_bytes(ckpt, DECODER_PREFIXES, bytes_per_element=b), acts + _weight_copy_bytes(ckpt, b))


def choices(ctx: StageContext) -> Iterator[tuple[dict, str]]:
    """The tiling asked for first (the official tiles for `tiling: auto`), then the largest tiles that fit the
    budget (a bounded search), then the smallest tiles (when nothing fits: the need to report)."""
    yield {"tiling": ctx.params.tiling}, label(ctx.params.tiling)
    cfg, grid, _ = _grid(ctx)
    if ctx.budget is not None:
        try:
            b = compute_bytes(ctx)
            found = choose_tiling(cfg, grid.latent_fhw, ctx.budget, held_weight_bytes(ctx.weights["checkpoint"], b),
                                  overhead_bytes=PROCESS_BASELINE_BYTES, itemsize=b)
            tiles = tiles_of(found.tiling)
            yield {"tiling": tiles}, label(tiles)
        except DecodeDoesNotFit:
            pass
    yield {"tiling": SMALLEST_TILES}, label(SMALLEST_TILES)


def label(t: Tiles | None) -> str:
    return "untiled" if t is None else t.label()


def predict(ctx: StageContext) -> PredictedOutput:
    cfg = vae_config(ctx)
    lat = ctx.inputs["latents"]
    _, _, f, h, w = lat.shape("video")
    frames, height, width = cfg.video_shape((f, h, w))
    return PredictedOutput({"video": (frames, height, width, 3)},
                           {"frame_count": frames, "height": height, "width": width, "fps": lat.facts["fps"]})


def _suggest(ctx: StageContext) -> str:
    """A tiling that would fit the budget, for the refusal message."""
    cfg, grid, _ = _grid(ctx)
    try:
        b = compute_bytes(ctx)
        choice = choose_tiling(cfg, grid.latent_fhw, ctx.budget, held_weight_bytes(ctx.weights["checkpoint"], b),
                               itemsize=b)
    except DecodeDoesNotFit as e:
        return str(e)
    t = tiles_of(choice.tiling)
    if t is None:
        return "decode untiled (tiling: off)"
    return "set tiling: {" + ", ".join(f"{k}: {v}" for k, v in t.model_dump(exclude_none=True).items()) + "} in the job"


def to_uint8(video: mx.array) -> mx.array:
    """[-1, 1] -> uint8, truncating as the official conversion does (in float32: bf16 spaces 128..255 by 1)."""
    return (mx.clip((video.astype(mx.float32) + 1.0) / 2.0, 0.0, 1.0) * 255.0).astype(mx.uint8)


def _write_frames_from(ctx: StageContext, plan: TilePlan, w, done: int) -> None:
    """Decode and write the frames from ``done`` on (all but the first ``done``, already durable).

    A resumed decode redoes every tile group that still adds to the frames not yet written, from the
    first such group on (``TilePlan.resume_point``): its blender then holds exactly what an
    uninterrupted one would, each tile draws its noise from the seed and its place in the plan only,
    and the frames come out bit-identical. The frames handed back again before ``done`` are dropped.
    """
    start_tile, first_frame = plan.resume_point(done)
    if done:
        ctx.progress.emit("resumed", step=start_tile, total=len(plan))
    if start_tile == len(plan):  # every frame is durable (a crash cut the finalize off)
        return
    decoder = load_video_decoder(ctx.weights["checkpoint"], compute_of(ctx))
    noise = KeyNoise(noise_key(int(ctx.params.seed), "decode")) if decoder.needs_noise else None
    latent = ctx.inputs["latents"].read("video").transpose(0, 2, 3, 4, 1)  # (B, C, F, H, W) -> channels-last
    blender = TileBlender(plan, first_frame=first_frame)
    ctx.progress.step(start_tile, len(plan))
    for tile, pixels in decode_tiles(decoder, latent, plan, None, noise, start=start_tile):
        finished = blender.add(tile, pixels)
        if finished is not None:
            first, video = finished
            keep = max(done - first, 0)
            if keep < video.shape[1]:
                w.write_frames("video", first + keep, to_uint8(video[0, keep:]))
                w.checkpoint(tile.index + 1)
        ctx.progress.step(tile.index + 1, len(plan))


def run(ctx: StageContext) -> None:
    cfg, plan, _ = _plan(ctx)
    if ctx.budget is not None:
        need = estimate(ctx).total
        if need > ctx.budget:
            raise DoesNotFit(f"decode with these tiles needs about {need / 2**30:.2f} GB, over the "
                             f"{ctx.budget / 2**30:.2f} GB budget: {_suggest(ctx)}")
    lat = ctx.inputs["latents"]
    frames, height, width = plan.video_fhw
    w = ctx.writer()
    if w.complete:
        w.finalize()
        return
    if not w.resumed:
        w.create_array("video", (frames, height, width, 3), "uint8")
    _write_frames_from(ctx, plan, w, w.frames_written("video"))
    w.finalize(facts={"frame_count": frames, "height": height, "width": width, "fps": float(lat.facts["fps"])})


STAGE = StageDef(
    name="decode", version=1, summary="latents -> uint8 RGB frames (video VAE decoder, tiled)",
    inputs={"latents": Port("latents")}, params=Params, output_kind="frames", output_name="frames.zarr",
    weights={"checkpoint": "video_decoder"}, resumable=True, resolve=resolve, check=check, estimate=estimate,
    run=run, choices=choices, predict=predict,
    budget_fix="use smaller decode tiles (job: tiling) or raise memory_budget",
)
