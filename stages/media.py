"""Reading conditioning media (images, video clips, soundtracks) into arrays, as the official pipelines do.

What each function reproduces of the official ``ltx_pipelines.utils.media_io`` (v1.2.0):

- ``load_image``: ``decode_image`` (EXIF orientation, alpha dropped, ICC profile converted to sRGB, RGB uint8);
- ``crf_roundtrip``: ``preprocess``: one frame through libx264 at the model's CRF (the compression the model
  was trained against), decoded back; the frame is cropped to even sides first, as the encoder needs;
- ``resize_center_crop``: ``resize_and_center_crop`` + ``normalize_images``: scale to cover the target
  (``ceil`` of the scaled sides), bilinear with ``align_corners=False`` and no antialiasing, centre crop,
  ``x / 127.5 - 1``;
- ``decode_video``: ``decode_video_from_file`` (a time window by presentation time) and
  ``decode_video_by_frame`` (the first ``frame_cap`` frames in decode order, as IC-LoRA reads references);
- ``decode_audio``: ``decode_audio_from_file`` (samples as float in [-1, 1], trimmed to the window; no
  resampling: the audio VAE's front-end, models/audio_vae/processor.py, resamples to its rate);
- ``mask_to_latent_weights``: ``downsample_mask_video_to_latent`` (area means per latent cell, the first frame
  alone, then means over each latent frame's pixel frames).

Everything is numpy in and out; files are read with Pillow (images) and PyAV (video, audio). A file that is
missing, unreadable or lacks the stream asked for is bad input naming the path, the problem and the fix.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import ExifTags, Image, ImageCms, UnidentifiedImageError

from .contract import BadInput

__all__ = ["MediaInfo", "probe", "load_image", "crf_roundtrip", "resize_center_crop", "decode_video", "decode_audio",
           "mask_to_latent_weights"]

# EXIF orientations that are a pure rotation, and the counter-clockwise degrees that undo them (the official
# set: mirrored orientations are left as they are).
_ROTATION = {3: 180, 6: 270, 8: 90}
_ORIENTATION_TAG = next(k for k, v in ExifTags.TAGS.items() if v == "Orientation")

# Integer sample formats -> the divisor that maps them to [-1, 1] (PyAV format names; "p": planar).
_INT_SCALE = {"s16": 32768.0, "s16p": 32768.0, "s32": 2147483648.0, "s32p": 2147483648.0}
# unsigned 8-bit, centred on 128: the offset is removed (the official divides by 128 only, which leaves a DC of +1
# in such files; no other format is affected)
_U8_FORMATS = ("u8", "u8p")

_MEDIA_FIX = "give an image (PNG, JPEG, ...), a video (MP4, MOV, ...) or an audio file (WAV, MP3, ...)"


@dataclass(frozen=True)
class MediaInfo:
    """What a media file holds, from its headers. Sizes and frame facts are 0 where the file has no video,
    ``sample_rate`` and ``channels`` 0 where it has no audio."""

    kind: str  # "image" | "video" (a file with a video stream, with or without audio) | "audio"
    width: int
    height: int
    frames: int
    fps: float
    duration_s: float
    has_video: bool
    has_audio: bool
    sample_rate: int
    channels: int


def _existing_file(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists():
        raise BadInput(f"{p}: no such file; check the path ({_MEDIA_FIX})")
    if not p.is_file():
        raise BadInput(f"{p}: is not a file; {_MEDIA_FIX}")
    return p


def _open_container(p: Path):
    try:
        return av.open(str(p))
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as e:
        raise BadInput(f"{p}: not a readable image, video or audio file ({e}); {_MEDIA_FIX}") from None


def _first(container, kind: str):
    return next((s for s in container.streams if s.type == kind), None)


def _video_frames(container, stream) -> int:
    """The stream's frame count from its header; where the container records none (Matroska, WebM), its
    packets are counted (demuxed, not decoded)."""
    if stream.frames:
        return int(stream.frames)
    return sum(1 for packet in container.demux(stream) if packet.size)


def _seconds(container, stream) -> float:
    if stream is not None and stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return container.duration / av.time_base if container.duration is not None else 0.0


def probe(path: str | Path) -> MediaInfo:
    """What ``path`` holds (kind, size, frames, rate, duration, audio), from its headers."""
    p = _existing_file(path)
    try:
        with Image.open(p) as im:  # lazy: reads the header only
            w, h = _oriented_size(im)
            return MediaInfo("image", w, h, 1, 0.0, 0.0, False, False, 0, 0)
    except (UnidentifiedImageError, OSError):
        pass  # not an image Pillow reads: try it as a video or audio file
    container = _open_container(p)
    try:
        video, audio = _first(container, "video"), _first(container, "audio")
        if video is None and audio is None:
            raise BadInput(f"{p}: holds no video or audio stream; {_MEDIA_FIX}")
        rate = audio.rate if audio is not None else 0
        channels = audio.layout.nb_channels if audio is not None else 0
        if video is None:
            return MediaInfo("audio", 0, 0, 0, 0.0, _seconds(container, audio), False, True, int(rate), int(channels))
        ctx = video.codec_context
        if not (ctx.width and ctx.height):  # e.g. a text file named .png: the demuxer guessed from the name
            raise BadInput(f"{p}: not a readable image, video or audio file (its video stream has no frame size); "
                           f"{_MEDIA_FIX}")
        fps = float(video.average_rate or video.guessed_rate or 0)
        frames = _video_frames(container, video)
        duration = _seconds(container, video) or (frames / fps if fps else 0.0)
        return MediaInfo("video", int(ctx.width), int(ctx.height), frames, fps, duration, True, audio is not None,
                         int(rate), int(channels))
    except av.FFmpegError as e:
        raise BadInput(f"{p}: unreadable ({e}); {_MEDIA_FIX}") from None
    finally:
        container.close()


# ----------------------------------------------------------------------------------------------------- images

def _oriented_size(im: Image.Image) -> tuple[int, int]:
    w, h = im.size
    return (h, w) if _ROTATION.get(im.getexif().get(_ORIENTATION_TAG)) in (90, 270) else (w, h)


def load_image(path: str | Path) -> np.ndarray:
    """The image as uint8 (H, W, 3) RGB: turned upright by its EXIF orientation, alpha dropped, its ICC profile
    (if any) converted to sRGB."""
    p = _existing_file(path)
    try:
        with Image.open(p) as source:
            im = source
            turn = _ROTATION.get(im.getexif().get(_ORIENTATION_TAG))
            if turn:
                im = im.rotate(turn, expand=True)
            profile = im.info.get("icc_profile")
            if im.mode == "RGBA":
                im = im.convert("RGB")
            elif im.mode == "LA":
                im = im.convert("L")
            if profile:
                try:
                    im = ImageCms.profileToProfile(im, ImageCms.ImageCmsProfile(io.BytesIO(profile)),
                                                   ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")),
                                                   outputMode="RGB")
                except (ImageCms.PyCMSError, OSError, ValueError):
                    im = im.convert("RGB")  # an unusable profile: the pixels as stored, as the official falls back
            else:
                im = im.convert("RGB")
            return np.array(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as e:
        raise BadInput(f"{p}: not a readable image ({e}); give a PNG, JPEG or other image Pillow reads") from None


def crf_roundtrip(image: np.ndarray, crf: int) -> np.ndarray:
    """``image`` (H, W, 3) uint8 after one H.264 encode at ``crf`` (libx264, preset veryfast, yuv420p) and decode:
    the compression the model was trained on. CRF 0, or a side under 2 pixels, returns the image as it is;
    otherwise odd sides lose their last row or column (4:2:0 needs even sides)."""
    if crf == 0 or min(image.shape[0], image.shape[1]) < 2:
        return image
    h, w = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=1, options={"crf": str(crf), "preset": "veryfast"})
        stream.height, stream.width = h, w
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[:h, :w]), format="rgb24").reformat(
            format="yuv420p")
        out.mux(stream.encode(frame))
        out.mux(stream.encode())  # flush
    with av.open(io.BytesIO(buf.getvalue())) as back:
        decoded = next(back.decode(video=0))
        return decoded.to_ndarray(format="rgb24")


# ----------------------------------------------------------------------------------------------------- resize

def _linear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of a linear resize from ``n_in`` to ``n_out`` samples with
    ``align_corners=False``, rounded as torch's CPU kernel rounds them: the scale ``in / out`` in float32, the
    source coordinate ``scale * (i + 0.5) - 0.5`` in double then stored as float32 and clamped at 0, the weight
    its float32 fraction, the upper neighbour clamped to the edge. (Any other rounding moves upscaled pixels by
    up to ~1e-5, the whole tolerance.)"""
    scale = np.float64(np.float32(n_in) / np.float32(n_out))
    src = np.maximum((scale * (np.arange(n_out) + 0.5) - 0.5).astype(np.float32), np.float32(0.0))
    i0 = src.astype(np.int64)  # truncation: src >= 0
    w1 = np.clip(src - i0.astype(np.float32), np.float32(0.0), np.float32(1.0)).astype(np.float32)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (np.float32(1.0) - w1).astype(np.float32), w1


def resize_center_crop(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 frames (F, H, W, 3) (or one image (H, W, 3)) -> float32 (1, 3, F, height, width) in [-1, 1].

    Scaled to cover the target (by the larger of the two ratios, sides rounded up so a float error never leaves
    the crop short), bilinearly resampled, centre-cropped, then ``x / 127.5 - 1``."""
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames (F, H, W, 3) or an image (H, W, 3), got shape {frames.shape}")
    _, src_h, src_w, _ = frames.shape
    scale = max(height / src_h, width / src_w)
    new_h, new_w = math.ceil(src_h * scale), math.ceil(src_w * scale)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    # only the rows and columns the crop keeps are interpolated (each output pixel depends on its own taps)
    r0, r1, rw0, rw1 = (a[top:top + height] for a in _linear_taps(src_h, new_h))
    c0, c1, cw0, cw1 = (a[left:left + width] for a in _linear_taps(src_w, new_w))
    # the four corner weights as products, summed in the order torch's channels-last kernel uses
    w00, w01 = (rw0[:, None] * cw0[None, :])[..., None], (rw0[:, None] * cw1[None, :])[..., None]
    w10, w11 = (rw1[:, None] * cw0[None, :])[..., None], (rw1[:, None] * cw1[None, :])[..., None]
    out = np.empty((1, 3, frames.shape[0], height, width), np.float32)
    for i, frame in enumerate(frames):  # one frame at a time: a long clip's float copies stay small
        x = frame.astype(np.float32)
        top_rows, bottom_rows = x[r0], x[r1]
        y = (top_rows[:, c0] * w00 + top_rows[:, c1] * w01 + bottom_rows[:, c0] * w10 + bottom_rows[:, c1] * w11)
        out[0, :, i] = np.moveaxis(y / np.float32(127.5) - np.float32(1.0), -1, 0)
    return out


# ----------------------------------------------------------------------------------------------------- video

def decode_video(path: str | Path, start: float = 0.0, max_duration: float | None = None,
                 frame_cap: int | None = None) -> tuple[np.ndarray, float]:
    """(uint8 frames (F, H, W, 3), the stream's frame rate).

    From the start with no ``max_duration``: every frame in decode order (the official ``decode_video_by_frame``).
    Otherwise the frames whose presentation time lies in [start, start + max_duration) (``decode_video_from_file``;
    a stream without timestamps falls back to frame indices at the stream's rate). ``frame_cap`` keeps at most
    that many frames."""
    p = _existing_file(path)
    if start < 0 or (max_duration is not None and max_duration <= 0) or (frame_cap is not None and frame_cap < 1):
        raise BadInput(f"{p}: cannot read the video window start={start} s, max_duration={max_duration} s, "
                       f"frame_cap={frame_cap}: give start >= 0 and a positive duration / frame count")
    container = _open_container(p)
    try:
        stream = _first(container, "video")
        if stream is None:
            raise BadInput(f"{p}: holds no video stream; give a video file (MP4, MOV, ...)")
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        if start == 0 and max_duration is None:
            out = _by_index(container, stream, 0, frame_cap)
        else:
            out = _by_time(container, stream, start, max_duration, frame_cap)
            if out is None:  # no timestamps: frame indices at the stream's rate, read afresh from the top
                container.close()
                container = _open_container(p)
                stream = _first(container, "video")
                caps = [c for c in (round(max_duration * fps) if max_duration is not None else None, frame_cap)
                        if c is not None]
                cap = min(caps) if caps else None
                out = _by_index(container, stream, round(start * fps), cap) if cap != 0 else []
    except av.FFmpegError as e:
        raise BadInput(f"{p}: the video cannot be decoded ({e}); re-encode it (e.g. H.264 MP4)") from None
    finally:
        container.close()
    if not out:
        raise BadInput(f"{p}: no video frames from {start:g} s"
                       + (f" for {max_duration:g} s" if max_duration is not None else "")
                       + "; give a window inside the clip")
    return np.stack(out), fps


def _by_index(container, stream, first: int, cap: int | None) -> list[np.ndarray]:
    out: list[np.ndarray] = []
    for index, frame in enumerate(container.decode(stream)):
        if index < first:
            continue
        out.append(frame.to_ndarray(format="rgb24"))
        if cap is not None and len(out) >= cap:
            break
    return out


def _by_time(container, stream, start: float, max_duration: float | None,
             cap: int | None) -> list[np.ndarray] | None:
    """Frames with presentation time in [start, start + max_duration); None when a frame carries no timestamp."""
    if start > 0:
        container.seek(int(start / stream.time_base), stream=stream)
    end = start + max_duration if max_duration is not None else None
    out: list[np.ndarray] = []
    for frame in container.decode(stream):
        if frame.pts is None:
            return None
        t = float(frame.pts * stream.time_base)
        if t < start:
            continue
        if end is not None and t >= end:
            break
        out.append(frame.to_ndarray(format="rgb24"))
        if cap is not None and len(out) >= cap:
            break
    return out


# ----------------------------------------------------------------------------------------------------- audio

def _samples(frame) -> np.ndarray:
    """One decoded audio frame as float32 (channels, samples) in [-1, 1]."""
    name = frame.format.name
    a = frame.to_ndarray().astype(np.float32)
    if name in _INT_SCALE:
        a = a / np.float32(_INT_SCALE[name])
    elif name in _U8_FORMATS:
        a = (a - np.float32(128.0)) / np.float32(128.0)
    if not frame.format.is_planar:  # interleaved: (1, samples * channels)
        a = a.reshape(-1, frame.layout.nb_channels).T
    return a


def decode_audio(path: str | Path, start: float = 0.0, max_duration: float | None = None) -> tuple[np.ndarray, int]:
    """(float32 (channels, samples) in [-1, 1], sample rate) of the first audio stream, from ``start`` seconds for
    ``max_duration`` seconds (to the end when None), at the file's own rate and channel count."""
    p = _existing_file(path)
    if start < 0 or (max_duration is not None and max_duration <= 0):
        raise BadInput(f"{p}: cannot read the audio window start={start} s, max_duration={max_duration} s: give "
                       "start >= 0 and a positive duration")
    container = _open_container(p)
    try:
        stream = _first(container, "audio")
        if stream is None:
            raise BadInput(f"{p}: holds no audio stream; give an audio file (WAV, MP3, ...) or a video with sound")
        rate = int(stream.rate)
        if max_duration is not None:
            end = start + max_duration
        else:
            end = float(stream.duration * stream.time_base) if stream.duration is not None else math.inf
        container.seek(int(start / stream.time_base), stream=stream)
        chunks, first_time = [], None
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            t = float(frame.pts * stream.time_base)
            if t + frame.samples / frame.sample_rate < start:
                continue
            if t > end:
                break
            if first_time is None:
                first_time = t
            chunks.append(_samples(frame))
    except av.FFmpegError as e:
        raise BadInput(f"{p}: the audio cannot be decoded ({e}); re-encode it (e.g. WAV)") from None
    finally:
        container.close()
    if not chunks:
        raise BadInput(f"{p}: no audio from {start:g} s; give a start inside the file's "
                       f"{_seconds_of(p):.3g} s")
    audio = np.concatenate(chunks, axis=-1)
    # codec frames need not start at ``start`` or end at the window's end: trim to the window's samples
    skip = round((start - first_time) * rate)
    if skip > 0:
        audio = audio[:, skip:]
    if max_duration is not None:
        audio = audio[:, :round(max_duration * rate)]
    return np.ascontiguousarray(audio, dtype=np.float32), rate


def _seconds_of(p: Path) -> float:
    with av.open(str(p)) as c:
        return _seconds(c, _first(c, "audio"))


# ----------------------------------------------------------------------------------------------------- masks

def _area_bounds(n_in: int, n_out: int) -> list[tuple[int, int]]:
    """Adaptive average pooling's windows: output cell i covers [floor(i n_in / n_out), ceil((i+1) n_in / n_out))."""
    return [((i * n_in) // n_out, -(-((i + 1) * n_in) // n_out)) for i in range(n_out)]


def mask_to_latent_weights(mask: np.ndarray, latent_fhw: tuple[int, int, int]) -> np.ndarray:
    """A pixel-space mask video (B, 1, F, H, W) -> per-latent-token weights (B, F_lat * H_lat * W_lat).

    Each frame is area-averaged onto the latent grid; latent frame 0 is pixel frame 0 alone, each later latent
    frame the mean of its (F - 1) / (F_lat - 1) pixel frames. Tokens are frame-major, as the patchifier orders them."""
    if mask.ndim != 5 or mask.shape[1] != 1:
        raise ValueError(f"expected a mask of shape (B, 1, F, H, W), got {mask.shape}")
    f_lat, h_lat, w_lat = latent_fhw
    b, _, f_pix, h, w = mask.shape
    m = np.asarray(mask, np.float64)
    rows, cols = _area_bounds(h, h_lat), _area_bounds(w, w_lat)
    cells = np.stack([np.stack([m[:, 0, :, r0:r1, c0:c1].mean(axis=(-2, -1)) for c0, c1 in cols], axis=-1)
                      for r0, r1 in rows], axis=-2)  # (B, F, h_lat, w_lat)
    if f_pix > 1 and f_lat > 1:
        if (f_pix - 1) % (f_lat - 1):
            raise BadInput(f"the conditioning attention mask has {f_pix} frames, which do not map onto {f_lat} latent "
                           f"frames: give 1 + {f_lat - 1}k frames (e.g. {1 + 8 * (f_lat - 1)}), as the reference video")
        t = (f_pix - 1) // (f_lat - 1)
        rest = cells[:, 1:].reshape(b, f_lat - 1, t, h_lat, w_lat).mean(axis=2)
        cells = np.concatenate([cells[:, :1], rest], axis=1)
    else:
        cells = cells[:, :1]
    return cells.reshape(b, -1).astype(np.float32)
