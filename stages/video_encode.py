"""video-encode: a video file -> conditioning.zarr (the clip's video latent, and with a mask file the conditioning
attention weights), as the official pipelines encode a retake source or an IC-LoRA reference.

Two ways to read the clip, the two official readers (``read``):

- ``window`` (retake, ``helpers.video_latent_from_file``): the frames whose presentation time lies in
  [start, start + frames / fps); the source must run at ``fps`` (the official refuses another rate); the latent is
  conformed to the clip's latent frames (truncated, or zero-padded when the source is shorter);
- ``first_frames`` (IC-LoRA reference, ``decode_video_by_frame``): the first ``frames`` frames in decode order
  from ``start``, whatever the source's rate; the latent is as long as the frames read give.

The frames are resized to cover ``width`` x ``height`` and centre-cropped (``media.resize_center_crop``), encoded by
the video VAE encoder, tiled when ``tiling`` says so (the official ``tiled_encode`` blend: models/video_vae/
encode_tiling.py). A conditioning attention mask (the official ``--conditioning-attention-mask``: a grayscale video,
white = attend) is read as IC-LoRA reads it (its first ``frames`` frames at ``mask_scale`` x the encode size, the
channel mean mapped from [-1, 1] to [0, 1]) and reduced to one weight per latent token by area means
(``media.mask_to_latent_weights``); its strength is the denoiser's parameter, not applied here.

The cache key holds the file's sha256, these parameters and the weights: how the latent is used is not part of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import mlx.core as mx
import numpy as np
from pydantic import Field, model_validator

from ltx2.artifacts_schema.keys import file_key
from ltx2.models.video_vae import (VIDEO_ENCODER_KEYMAP, SpatialTiling, TemporalTiling, VideoVAEConfig,
                                   load_video_encoder)
from ltx2.models.video_vae.encode_tiling import (EncodeDoesNotFit, EncodeTiling, choose_encode_tiling, encode_grid,
                                                 encode_need, smallest_encode_tiling, tiled_encode)
from ltx2.models.ops import conform_length
from ltx2.models.weights.source import open_source
from ltx2.spec.layout import CHECKPOINT_PARTS
from ltx2.spec.precision import Compute

from .contract import PROCESS_BASELINE_BYTES, BadInput, MemoryPlan
from .media import decode_video, mask_to_latent_weights, probe, resize_center_crop
from .memory import cached_header, compute_bytes, compute_of, weight_bytes
from .params import Tiles, compute_field
from .registry import FILE, Port, PredictedOutput, StageContext, StageDef, StageParams

ENCODER_PREFIXES = CHECKPOINT_PARTS["video_encoder"]
FPS_TOLERANCE = 1e-3  # relative: a source at 23.976 fps matches fps 23.976 however either was rounded


class Params(StageParams):
    width: int = Field(ge=32, multiple_of=32, description="pixel width to encode at")
    height: int = Field(ge=32, multiple_of=32, description="pixel height to encode at")
    frames: int = Field(ge=1, description="pixel frames to read (1 + 8k)")
    fps: float = Field(gt=0, description="frame rate of the clip it conditions")
    start: float = Field(0.0, ge=0, description="seconds into the file to read from")
    read: Literal["window", "first_frames"] = Field(
        "window", description="window: frames in [start, start + frames/fps), the source at fps, latent conformed "
                              "to the clip (retake); first_frames: the first `frames` frames, any rate (IC-LoRA)")
    tiling: Tiles | None = Field(None, description="encode tiles {spatial_tile, spatial_overlap, temporal_tile, "
                                                   "temporal_overlap} (pixels, frames; the spatial tile cuts height "
                                                   "and width each); none: untiled")
    mask_scale: int = Field(1, ge=1, description="the attention mask is read at this multiple of the encode size "
                                                 "(the official CLI: the reference downscale factor)")
    compute: Compute = compute_field()

    @model_validator(mode="after")
    def _frames_on_the_grid(self) -> Params:
        if (self.frames - 1) % 8:
            raise ValueError(f"frames must be 1 + 8k (e.g. {1 + 8 * ((self.frames - 1) // 8)} or "
                             f"{9 + 8 * ((self.frames - 1) // 8)}), got {self.frames}")
        return self


# -- tiles ------------------------------------------------------------------------------------------------------
def encode_tiling(t: Tiles | None) -> EncodeTiling | None:
    """The ``tiling`` parameter -> EncodeTiling (bad input when the official encoder would refuse it)."""
    if t is None or not (t.spatial_tile or t.temporal_tile):
        return None
    try:
        sp = SpatialTiling(t.spatial_tile, t.spatial_overlap) if t.spatial_tile else None
        tp = TemporalTiling(t.temporal_tile, t.temporal_overlap) if t.temporal_tile else None
        return EncodeTiling(sp, tp)
    except ValueError as e:
        raise BadInput(f"video-encode: tiling {t.label()}: {e}") from None


def tiles_of(tiling: EncodeTiling | None) -> Tiles | None:
    if tiling is None:
        return None
    out: dict[str, int] = {}
    if tiling.spatial:
        out.update(spatial_tile=tiling.spatial.tile_size_in_pixels,
                   spatial_overlap=tiling.spatial.tile_overlap_in_pixels)
    if tiling.temporal:
        out.update(temporal_tile=tiling.temporal.tile_size_in_frames,
                   temporal_overlap=tiling.temporal.tile_overlap_in_frames)
    return Tiles(**out)


def label(t: Tiles | None) -> str:
    return "untiled" if t is None else t.label()


# -- what the stage reads --------------------------------------------------------------------------------------
def vae_config(ctx: StageContext) -> VideoVAEConfig:
    ckpt = ctx.weights["checkpoint"]
    try:
        return VideoVAEConfig.from_config(cached_header(ckpt).config()["vae"])
    except (ValueError, KeyError) as e:
        raise BadInput(f"video-encode: the video VAE config of {ckpt} is not supported: {e}; use an LTX-2 checkpoint "
                       "(`ltx2 weights check FILE` says what it is)") from e


def _file(ctx: StageContext, port: str) -> Path | None:
    """The file given for ``port`` when it is there to read (the planner may hold a placeholder)."""
    f = ctx.inputs.get(port)
    return f if isinstance(f, Path) and f.is_file() else None


def _source_frames(ctx: StageContext) -> int | None:
    """The frames the source holds from ``start`` (headers only), when the file is there."""
    f = _file(ctx, "video")
    if f is None:
        return None
    info = probe(f)
    return max(0, info.frames - round(ctx.params.start * info.fps)) if info.fps else info.frames


def _latent_fhw(ctx: StageContext, cfg: VideoVAEConfig) -> tuple[int, int, int]:
    """The latent the stage writes: the clip's (window), or what the frames read give (first_frames)."""
    p = ctx.params
    frames = p.frames
    if p.read == "first_frames":
        have = _source_frames(ctx)
        frames = min(frames, have) if have else frames
    return encode_grid(cfg, (frames, p.height, p.width), None).latent_fhw


def check(ctx: StageContext) -> None:
    """The config, the checkpoint holds the encoder, the tiling and, when the file is there, its video stream, rate
    and length (headers only)."""
    _, ss = vae_config(ctx).encoder_scales
    p = ctx.params
    if p.width % ss or p.height % ss:
        raise BadInput(f"video-encode: width and height must be multiples of {ss}, got {p.width}x{p.height}")
    open_source(ctx.weights["checkpoint"], VIDEO_ENCODER_KEYMAP).require_tensors()
    encode_tiling(p.tiling)
    for port in ("video", "mask"):
        f = _file(ctx, port)
        if f is None:
            continue
        info = probe(f)
        if not info.has_video:
            raise BadInput(f"video-encode: {port} file {f} holds no video stream; give a video file (MP4, MOV, ...)")
        if port == "video" and p.read == "window":
            if abs(info.fps - p.fps) > FPS_TOLERANCE * p.fps:
                raise BadInput(f"video-encode: {f} runs at {info.fps:g} fps, the clip at {p.fps:g}; the official "
                               f"pipeline refuses another rate: give a {p.fps:g} fps source, or fps: {info.fps:g}")
            if info.duration_s and p.start >= info.duration_s:
                raise BadInput(f"video-encode: start {p.start:g} s is past the end of {f} ({info.duration_s:.3g} s); "
                               "give a start inside the clip")


# -- memory ------------------------------------------------------------------------------------------------------
def held_weight_bytes(checkpoint: Path, itemsize: int = 4) -> int:
    """The encoder's weights and one conv-weight copy at the compute width (see decode.held_weight_bytes)."""
    return weight_bytes(checkpoint, ENCODER_PREFIXES, bytes_per_element=itemsize) + \
        open_source(checkpoint, VIDEO_ENCODER_KEYMAP).conv_copy_bytes(itemsize)


def input_bytes(frames: int, height: int, width: int, source_hw: tuple[int, int] | None) -> tuple[int, int]:
    """(peak while the clip is read and resized, what stays held while it is encoded). Reading holds the decoded
    uint8 frames twice (the list and its stack), resizing those and the float32 clip, converting the float32 clip
    twice (numpy, MLX); the encode holds the MLX clip."""
    sh, sw = source_hw or (height, width)
    u8 = frames * sh * sw * 3
    clip = frames * height * width * 3 * 4
    return max(2 * u8, u8 + clip, 2 * clip), clip


def plan_bytes(cfg: VideoVAEConfig, weights: int, conv_copy: int, video_fhw: tuple[int, int, int],
               tiling: EncodeTiling | None, source_hw: tuple[int, int] | None = None, mask: bool = False,
               mask_scale: int = 1, itemsize: int = 4) -> MemoryPlan:
    """The stage's peak: the weights at ``itemsize`` bytes, one conv-weight copy, and the largest of reading the clip,
    reading the mask (the clip held) and encoding (the clip held, the largest tile's activations at ``itemsize``
    bytes, the blended latent)."""
    f, h, w = video_fhw
    read, held = input_bytes(f, h, w, source_hw)
    if mask:
        read = max(read, held + input_bytes(f, h * mask_scale, w * mask_scale, None)[0])
    acts = max(read, held + encode_need(cfg, encode_grid(cfg, video_fhw, tiling), itemsize=itemsize))
    return MemoryPlan(weights, conv_copy + acts)


def _source_hw(ctx: StageContext) -> tuple[int, int] | None:
    f = _file(ctx, "video")
    if f is None:
        return None
    info = probe(f)
    return (info.height, info.width) if info.has_video else None


def estimate(ctx: StageContext) -> MemoryPlan:
    cfg, p, ckpt, b = vae_config(ctx), ctx.params, ctx.weights["checkpoint"], compute_bytes(ctx)
    weights = weight_bytes(ckpt, ENCODER_PREFIXES, bytes_per_element=b)
    return plan_bytes(cfg, weights, held_weight_bytes(ckpt, b) - weights, (p.frames, p.height, p.width),
                      encode_tiling(p.tiling), _source_hw(ctx), ctx.inputs.get("mask") is not None, p.mask_scale, b)


def choices(ctx: StageContext):
    """The tiling asked for first, then the largest tiles that fit the budget, then the smallest tiles (when nothing
    fits: the need to report)."""
    yield {"tiling": ctx.params.tiling}, label(ctx.params.tiling)
    if ctx.budget is not None:
        cfg, p = vae_config(ctx), ctx.params
        ckpt = ctx.weights["checkpoint"]
        _, held = input_bytes(p.frames, p.height, p.width, None)
        b = compute_bytes(ctx)
        fixed = held_weight_bytes(ckpt, b) + PROCESS_BASELINE_BYTES + held
        try:
            found = tiles_of(choose_encode_tiling(cfg, (p.frames, p.height, p.width), ctx.budget, fixed,
                                                  itemsize=b).tiling)
            yield {"tiling": found}, label(found)
        except EncodeDoesNotFit:
            pass
    smallest = tiles_of(smallest_encode_tiling())
    yield {"tiling": smallest}, label(smallest)


def predict(ctx: StageContext) -> PredictedOutput:
    cfg, p = vae_config(ctx), ctx.params
    f, h, w = _latent_fhw(ctx, cfg)
    shapes: dict[str, tuple[int, ...]] = {"video": (1, cfg.latent_channels, f, h, w)}
    if ctx.inputs.get("mask") is not None:
        shapes["attention"] = (1, f * h * w)
    return PredictedOutput(shapes, {"medium": "video", "width": p.width, "height": p.height,
                                    "frame_count": (f - 1) * cfg.encoder_scales[0] + 1, "fps": p.fps})


# -- running -----------------------------------------------------------------------------------------------------
def read_clip(path: Path, p: Params) -> np.ndarray:
    """The clip as float32 (1, 3, F, height, width) in [-1, 1], read the way ``p.read`` says."""
    if p.read == "window":  # the source's rate was checked against fps (check)
        frames, _ = decode_video(path, start=p.start, max_duration=p.frames / p.fps)
    else:
        frames, _ = decode_video(path, start=p.start, frame_cap=p.frames)
    return resize_center_crop(frames, p.height, p.width)


def read_mask(path: Path, p: Params, latent_fhw: tuple[int, int, int]) -> np.ndarray:
    """The attention mask video -> (1, latent tokens) weights in [0, 1], as IC-LoRA reads its mask."""
    frames, _ = decode_video(path, frame_cap=p.frames)
    pixels = resize_center_crop(frames, p.height * p.mask_scale, p.width * p.mask_scale)
    gray = np.clip((pixels.mean(axis=1, keepdims=True) + 1.0) / 2.0, 0.0, 1.0)
    return mask_to_latent_weights(gray, latent_fhw)


def channels_last(clip: np.ndarray) -> mx.array:
    """float32 (1, 3, F, H, W) -> MLX (1, F, H, W, 3), one contiguous copy (evaluated: the numpy clip can go)."""
    video = mx.array(np.moveaxis(clip, 1, -1))
    mx.eval(video)
    return video


def encode_video(encoder, video: mx.array, tiling: EncodeTiling | None, progress=None) -> mx.array:
    """(1, F, H, W, 3) -> latent (1, C, F', H', W')."""
    return tiled_encode(encoder, video, tiling, progress).transpose(0, 4, 1, 2, 3)


def encode_clip(encoder, clip: np.ndarray, tiling: EncodeTiling | None = None, progress=None) -> mx.array:
    """float32 (1, 3, F, H, W), channels-first as the official code holds it -> latent (1, C, F', H', W')."""
    return encode_video(encoder, channels_last(clip), tiling, progress)


def run(ctx: StageContext) -> None:
    p = ctx.params
    cfg = vae_config(ctx)
    tiling = encode_tiling(p.tiling)
    source: Path = ctx.inputs["video"]
    mask_file: Path | None = ctx.inputs.get("mask")
    video = channels_last(read_clip(source, p))  # only the MLX copy is held from here (the estimate counts one)
    # the latent's shape, known before encoding: the mask is read (and refused) first
    if p.read == "window":
        f, h, w = encode_grid(cfg, (p.frames, p.height, p.width), None).latent_fhw
    else:
        f, h, w = encode_grid(cfg, tuple(video.shape[1:4]), None).latent_fhw
    weights = None
    if mask_file is not None:
        weights = read_mask(mask_file, p, (f, h, w))
        if weights.shape[1] != f * h * w:  # a one-frame mask gives one latent frame's weights only
            raise BadInput(f"video-encode: the mask {mask_file} gives {weights.shape[1] // (h * w)} latent frame(s) of "
                           f"weights, the reference has {f}: give a mask video as long as the reference "
                           f"({p.frames} frames)")
    encoder = load_video_encoder(ctx.weights["checkpoint"], compute_of(ctx))
    latent = conform_length(encode_video(encoder, video, tiling, ctx.progress.step), f)
    mx.eval(latent)
    writer = ctx.writer()
    writer.write_array("video", latent)
    if weights is not None:
        writer.write_array("attention", mx.array(weights))
    writer.finalize(facts={"medium": "video", "source_sha256": file_key(source), "width": p.width,
                           "height": p.height, "frame_count": (f - 1) * cfg.encoder_scales[0] + 1, "fps": float(p.fps)})


STAGE = StageDef(
    name="video-encode", version=1,
    summary="video file -> video latent (+ attention mask weights) for retake / IC-LoRA (video VAE encoder, tiled)",
    inputs={"video": Port(FILE), "mask": Port(FILE, optional=True)}, params=Params,
    output_kind="conditioning", output_name="video-conditioning.zarr",
    weights={"checkpoint": "video_encoder"}, check=check, estimate=estimate, run=run, choices=choices,
    predict=predict, budget_fix="use smaller encode tiles (job: tiling) or raise memory_budget",
)
