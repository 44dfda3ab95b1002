"""decode: latents.zarr -> frames.zarr (uint8 RGB), tiled when asked, resumable per finished frame range.

Frames are streamed into the artifact in time order as the tile blender finishes each temporal
group; a checkpoint after each makes them durable, so a killed decode continues from the last
finished group (that group's overlap is decoded again, the frames already written are kept).
"""

from __future__ import annotations

import mlx.core as mx

from .base import StageContext, StageSpec
from .contract import BadInput, DoesNotFit, MemoryPlan
from .memory import weight_bytes

SPEC = StageSpec("decode", inputs=("latents",), output_kind="frames", weights=("checkpoint",), resumable=True,
                 budget_fix="use smaller decode tiles (job: tiling) or raise memory_budget")

DECODER_PREFIXES = ("vae.decoder.", "vae.per_channel_statistics.")


def resolve_params(inputs, p: dict) -> dict:
    out = {"tiling": None, "seed": inputs["latents"].params.get("seed", 0), **p}
    t = out["tiling"]
    if t is not None and not isinstance(t, dict):
        raise BadInput(f"decode: tiling={t!r} must be omitted (untiled) or a mapping like "
                       "{spatial_tile: 512, spatial_overlap: 64, temporal_tile: 64, temporal_overlap: 24}")
    return out


def tiling_config(t: dict | None):
    from ltx2.models.video_vae import SpatialTiling, TemporalTiling, TilingConfig

    if not t:
        return None
    sp = SpatialTiling(t["spatial_tile"], t.get("spatial_overlap", 64)) if t.get("spatial_tile") else None
    tp = TemporalTiling(t["temporal_tile"], t.get("temporal_overlap", 24)) if t.get("temporal_tile") else None
    return TilingConfig(sp, tp) if (sp or tp) else None


def _plan(ctx: StageContext):
    from ltx2.models.video_vae import VideoVAEConfig, plan_tiles
    from ltx2.models.weights import read_header

    cfg = VideoVAEConfig.from_config(read_header(ctx.weights["checkpoint"]).config()["vae"])
    _, c, f, h, w = ctx.inputs["latents"].shape("video")
    if c != cfg.latent_channels:
        raise BadInput(f"decode: the latents have {c} channels, the checkpoint's VAE decodes {cfg.latent_channels}")
    try:
        tiling = tiling_config(ctx.params["tiling"])
        return cfg, plan_tiles(cfg, (f, h, w), tiling), tiling
    except (ValueError, KeyError) as e:
        raise BadInput(f"decode: tiling {ctx.params['tiling']}: {e}") from e


def _weight_copy_bytes(checkpoint) -> int:
    """The contiguous copy MLX's convolution makes of a decoder weight per call (none for a file that stores
    MLX's layout, as a converted one does)."""
    from ltx2.models.video_vae import VIDEO_DECODER_KEYMAP
    from ltx2.models.weights.source import open_source

    return open_source(checkpoint, VIDEO_DECODER_KEYMAP).conv_copy_bytes()


def held_weight_bytes(checkpoint) -> int:
    """What the decoder's weights take besides the activations: float32 weights and one conv-weight copy."""
    return weight_bytes(checkpoint, DECODER_PREFIXES) + _weight_copy_bytes(checkpoint)


def estimate(ctx: StageContext) -> MemoryPlan:
    import math

    from ltx2.models.video_vae import estimate_decode_bytes
    from ltx2.models.video_vae.tiling import blender_bytes

    cfg, plan, _ = _plan(ctx)
    biggest = max((t.latent_fhw for t in plan.tiles), key=math.prod)
    acts = estimate_decode_bytes(cfg, biggest) + blender_bytes(plan, 1, cfg.out_channels)
    ckpt = ctx.weights["checkpoint"]
    return MemoryPlan(weight_bytes(ckpt, DECODER_PREFIXES), acts + _weight_copy_bytes(ckpt))


def _suggest(ctx: StageContext) -> str:
    """A tiling that would fit the budget, for the refusal message."""
    from ltx2.models.video_vae import DecodeDoesNotFit, choose_tiling

    cfg, plan, _ = _plan(ctx)
    try:
        choice = choose_tiling(cfg, plan.latent_fhw, ctx.budget, held_weight_bytes(ctx.weights["checkpoint"]))
    except DecodeDoesNotFit as e:
        return str(e)
    t = choice.tiling
    if t is None:
        return "decode untiled (tiling: off)"
    parts = []
    if t.spatial:
        parts.append(f"spatial_tile: {t.spatial.tile_size_in_pixels}, spatial_overlap: {t.spatial.tile_overlap_in_pixels}")
    if t.temporal:
        parts.append(f"temporal_tile: {t.temporal.tile_size_in_frames}, "
                     f"temporal_overlap: {t.temporal.tile_overlap_in_frames}")
    return "set tiling: {" + ", ".join(parts) + "} in the job"


def to_uint8(video: mx.array) -> mx.array:
    """[-1, 1] -> uint8, truncating as the official conversion does."""
    return (mx.clip((video + 1.0) / 2.0, 0.0, 1.0) * 255.0).astype(mx.uint8)


def run(ctx: StageContext) -> None:
    from ltx2.models.video_vae import KeyNoise, TileBlender, decode_tiles, load_video_decoder

    from .sampling import noise_key

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
    done = w.frames_written("video")
    start_tile, first_frame = plan.resume_point(done)
    if done:
        ctx.progress.emit("resumed", step=start_tile, total=len(plan))
    decoder = load_video_decoder(ctx.weights["checkpoint"])
    noise = KeyNoise(noise_key(int(ctx.params["seed"]), "decode")) if decoder.needs_noise else None
    latent = lat.read("video").transpose(0, 2, 3, 4, 1)  # (B, C, F, H, W) -> channels-last
    blender = TileBlender(plan, first_frame=first_frame)
    ctx.progress.step(start_tile, len(plan))
    for tile, pixels in decode_tiles(decoder, latent, plan, None, noise, start=start_tile):
        finished = blender.add(tile, pixels)
        if finished is not None:
            first, video = finished
            keep = max(done - first, 0)  # frames a resumed decode had already written
            if keep < video.shape[1]:
                w.write_frames("video", first + keep, to_uint8(video[0, keep:]))
                w.checkpoint(tile.index + 1)
        ctx.progress.step(tile.index + 1, len(plan))
    w.finalize(facts={"frame_count": frames, "height": height, "width": width, "fps": float(lat.facts["fps"])})
