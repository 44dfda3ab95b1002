"""image-encode: an image file -> image.zarr (a conditioning artifact): its video-VAE latent at one size, one frame.

As the official pipelines prepare a conditioning image (``load_image_and_preprocess`` then ``VideoEncoder``):
the image is read upright in sRGB (stages/media.py), re-compressed once through H.264 at the checkpoint's CRF
(the compression the model was trained on; ``crf: 0`` skips it), resized to cover ``width`` x ``height`` and
centre-cropped, mapped to [-1, 1] and encoded as a one-frame clip.

How the latent applies (frame, strength, replace or keyframe) is the denoising stage's parameter, not this
artifact's: the key is the image's content hash, the size, the CRF and the encoder weights, so one encoding
serves every job that conditions on the same file at the same size.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
from pydantic import Field

from ltx2.models.ops import conv3d_temp_bytes
from ltx2.models.video_vae import VIDEO_ENCODER_KEYMAP, VideoVAEConfig, load_video_encoder
from ltx2.models.video_vae.config import ENCODER_BLOCKS
from ltx2.models.video_vae.layers import CONV_TEMP_BYTES
from ltx2.models.weights.source import open_source
from ltx2.spec.layout import CHECKPOINT_PARTS
from ltx2.spec.precision import Compute
from ltx2.spec.versions import default_image_crf

from .contract import BadInput, MemoryPlan, StageError
from .media import crf_roundtrip, load_image, probe, resize_center_crop
from .memory import COMPUTE_BYTES, cached_header, compute_bytes, compute_of, weight_bytes
from .params import compute_field
from .registry import FILE, Port, PredictedOutput, StageContext, StageDef, StageParams, input_key

ENCODER_PREFIXES = CHECKPOINT_PARTS["video_encoder"]
class Params(StageParams):
    width: int = Field(96, ge=32, multiple_of=32, description="latent grid width in pixels (multiple of 32)")
    height: int = Field(64, ge=32, multiple_of=32, description="latent grid height in pixels (multiple of 32)")
    crf: int | None = Field(None, ge=0, le=51, description="H.264 CRF of the image re-compression; 0: none; "
                                                           "none: the checkpoint's (33 for LTX-2 and 2.3)")
    compute: Compute = compute_field()


def vae_config(ctx: StageContext) -> VideoVAEConfig:
    ckpt = ctx.weights["checkpoint"]
    try:
        return VideoVAEConfig.from_config(cached_header(ckpt).config()["vae"])
    except (ValueError, KeyError) as e:
        raise BadInput(f"image-encode: the video VAE config of {ckpt} is not supported: {e}; use an LTX-2 "
                       "checkpoint (`ltx2 weights check FILE` says what it is)") from e


def crf_of(ctx: StageContext) -> int:
    """The CRF asked for, else the checkpoint's model version's (its ``model_version`` metadata)."""
    if ctx.params.crf is not None:
        return ctx.params.crf
    return default_image_crf(cached_header(ctx.weights["checkpoint"]).metadata.get("model_version"))


def _latent_shape(ctx: StageContext) -> tuple[int, int, int, int, int]:
    cfg = vae_config(ctx)
    _, px = cfg.encoder_scales
    p = ctx.params
    if p.width % px or p.height % px:
        raise BadInput(f"image-encode: {p.width}x{p.height} is not a multiple of the encoder's {px} pixels per latent "
                       f"cell; give width and height that are")
    return 1, cfg.latent_channels, 1, p.height // px, p.width // px


def check(ctx: StageContext) -> None:
    """Headers only: the encoder's config and size, the checkpoint holds the encoder, the file is an image."""
    _latent_shape(ctx)
    open_source(ctx.weights["checkpoint"], VIDEO_ENCODER_KEYMAP).require_tensors()
    path = ctx.inputs.get("image")
    if isinstance(path, Path):
        info = probe(path)
        if info.kind != "image":
            raise BadInput(f"image-encode: {path} is {'a video' if info.kind == 'video' else 'an audio file'}, not an "
                           "image; give a PNG, JPEG or other still image (a video conditions through video-encode)")


def activation_bytes(cfg: VideoVAEConfig, height: int, width: int, frames: int = 1,
                     itemsize: int = COMPUTE_BYTES) -> int:
    """Peak activation bytes of one encoder call on ``frames`` x ``height`` x ``width`` pixels: the largest, over
    the encoder's blocks, of what is alive at its worst moment, in units of channels x voxels at that block's
    resolution (res blocks 11 C V as the decoder's estimate; a downsampling block 6 C V: its input, padded copy,
    convolution output, space-to-depth copies and shortcut, on one more frame where it halves time, as it repeats
    the first), plus the unfolded-input buffer of its convolution, which dominates. Measured on CPU (MLX, the
    full-size encoder's shapes at 256x384, one frame): 214 MiB over the weights for the whole call, 208 MiB of it
    at the worst block (compress_all 512 -> 1024); estimated 276 MiB. The tiny encoder at 512x768: 168 MiB
    measured (its input convolution), 182 MiB estimated."""
    p = cfg.patch_size
    f, h, w = frames, height // p, width // p

    def conv_temp(c_in: int, t: int) -> int:  # the unfolded input, and the padded input's copies (time, space)
        padded = (1, t + 2, h + 2, w + 2, c_in)
        unfolded = conv3d_temp_bytes(padded, (3, 3, 3), (1, 1, 1), CONV_TEMP_BYTES, itemsize)
        return unfolded + 3 * math.prod(padded) * itemsize

    c_in = cfg.in_channels * p * p
    peak = (2 * c_in + cfg.latent_channels) * f * h * w * itemsize + conv_temp(c_in, f)
    for name, _, w_in, w_out in cfg.encoder_stages():
        if name in ("res_x", "res_x_y"):
            peak = max(peak, 11 * max(w_in, w_out) * f * h * w * itemsize + conv_temp(w_in, f))
            continue
        t, s = ENCODER_BLOCKS[name]
        f_in = f + 1 if t == 2 else f
        peak = max(peak, 6 * max(w_in, w_out) * f_in * h * w * itemsize + conv_temp(w_in, f_in))
        f, h, w = f_in // t, h // s, w // s
    width_out = cfg.encoder_stages()[-1][3] if cfg.encoder_blocks else cfg.latent_channels
    peak = max(peak, 4 * width_out * f * h * w * itemsize + conv_temp(width_out, f))
    return int(peak + 3 * height * width * frames * itemsize * 2)  # + the pixels, as read and as the network's input


def estimate(ctx: StageContext) -> MemoryPlan:
    """The encoder's weights, one conv-weight copy, and one frame's activations (small), at the compute width."""
    cfg = vae_config(ctx)
    ckpt = ctx.weights["checkpoint"]
    b = compute_bytes(ctx)
    copy = open_source(ckpt, VIDEO_ENCODER_KEYMAP).conv_copy_bytes(b)
    return MemoryPlan(weight_bytes(ckpt, ENCODER_PREFIXES, bytes_per_element=b),
                      copy + activation_bytes(cfg, ctx.params.height, ctx.params.width, itemsize=b))


def _facts(ctx: StageContext) -> dict[str, Any]:
    path = ctx.inputs.get("image")
    p = ctx.params
    return {"medium": "image", "source_sha256": input_key(path) if isinstance(path, Path) else "",
            "width": p.width, "height": p.height, "frame_count": 1, "fps": 0.0}  # one still frame: no clip, no rate


def predict(ctx: StageContext) -> PredictedOutput:
    return PredictedOutput({"video": _latent_shape(ctx)}, _facts(ctx))


def encode_pixels(encoder, pixels: np.ndarray) -> mx.array:
    """(1, 3, F, H, W) pixels in [-1, 1] (channels-first, as the official code holds them) -> (1, C, F', h, w),
    float32 (the artifacts' dtype, whatever the encoder computed in)."""
    latent = encoder(mx.array(np.moveaxis(pixels, 1, -1)))
    return latent.transpose(0, 4, 1, 2, 3).astype(mx.float32)


def run(ctx: StageContext) -> None:
    p = ctx.params
    shape = _latent_shape(ctx)
    ctx.progress.step(0, 2)
    image = crf_roundtrip(load_image(ctx.inputs["image"]), crf_of(ctx))
    pixels = resize_center_crop(image, p.height, p.width)
    ctx.progress.step(1, 2)
    latent = encode_pixels(load_video_encoder(ctx.weights["checkpoint"], compute_of(ctx)), pixels)
    mx.eval(latent)
    if tuple(latent.shape) != shape:
        raise StageError(f"image-encode: the encoder made a {tuple(latent.shape)} latent, not {shape}")
    w = ctx.writer()
    w.write_array("video", latent)
    w.finalize(facts=_facts(ctx))
    ctx.progress.step(2, 2)


STAGE = StageDef(
    name="image-encode", version=1, summary="an image file -> its video-VAE latent (conditioning: image-to-video, "
                                            "keyframes)",
    inputs={"image": Port(FILE)}, params=Params, output_kind="conditioning", output_name="image.zarr",
    weights={"checkpoint": "video_encoder"}, check=check, estimate=estimate, run=run, predict=predict,
    budget_fix="raise memory_budget",
)
