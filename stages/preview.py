"""preview: frames.zarr + audio.zarr -> a PNG contact sheet of the clip.

The sheet shows ``columns * rows`` evenly spaced frames (the first and the last included), each
labelled with its time and index, and under them the audio: one min/max waveform lane per channel
and a log-magnitude spectrogram of the channels' mix. Both audio panels share one time axis that
spans the video's duration (frame_count / fps), so a sound lines up with the frames above it.

Pillow and numpy only (matplotlib would be a heavy import for one picture). The output is
deterministic: the same inputs give the same PNG bytes.
"""

from __future__ import annotations

import math
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydantic import Field

from ltx2.artifacts_schema import Artifact
from ltx2.artifacts_schema.files import fsync_dir
from ltx2.spec.errors import BadInputError

from .contract import MemoryPlan
from .registry import Port, StageContext, StageDef, StageParams

# ---- look ------------------------------------------------------------------------------------
GAP = 8                 # px around and between tiles and panels
LANE_HEIGHT = 56        # px per waveform channel lane
LANE_GAP = 2            # px between two channels' lanes
SPECTROGRAM_HEIGHT = 128  # px; rows span 0 Hz (bottom) .. Nyquist (top), linearly
N_FFT = 1024            # STFT window (Hann) length in samples
DB_FLOOR = -90.0        # dB (re. a full-scale sine) drawn as the colormap's darkest colour
LIBRARY_SLACK = 16 << 20  # estimate_bytes: zstd / zlib contexts, font, malloc slack

BACKGROUND = (24, 24, 24)
PANEL = (12, 12, 12)
AXIS = (60, 60, 60)
WAVE = (110, 200, 255)
TEXT = (230, 230, 230)

# Spectrogram colormap anchors (position, r, g, b): black -> purple -> red -> orange -> pale yellow.
# Luminance rises monotonically along it, so "brighter" always means "louder".
_ANCHORS = np.array([
    (0.00, 0, 0, 4),
    (0.25, 60, 15, 110),
    (0.50, 180, 50, 90),
    (0.75, 245, 140, 30),
    (1.00, 252, 250, 180),
], dtype=np.float64)
COLORMAP = np.stack([np.interp(np.linspace(0.0, 1.0, 256), _ANCHORS[:, 0], _ANCHORS[:, i]) for i in (1, 2, 3)],
                    axis=1).round().astype(np.uint8)  # (256, 3) lookup table

Box = tuple[int, int, int, int]  # left, top, right, bottom (right / bottom exclusive)


class Params(StageParams):
    """The preview stage's parameters (everything that changes the picture)."""


    columns: int = Field(4, ge=1, le=16, description="Thumbnails per row of the contact sheet.")
    rows: int = Field(2, ge=1, le=16, description="Rows of thumbnails (fewer when the clip has fewer frames).")
    thumb_width: int = Field(256, ge=32, le=1024, description="Width of each thumbnail in pixels (height keeps "
                             "the frame's aspect ratio).")
    spectrogram: bool = Field(True, description="Draw the audio's log-magnitude spectrogram under the waveform.")


class FrameSource(Protocol):
    """What render_preview needs of the frames: a (F, H, W, 3) shape and one uint8 frame per index.

    A numpy array is one; run_preview passes a view of an artifact that reads only the frames shown.
    """

    @property
    def shape(self) -> tuple[int, ...]: ...

    def __getitem__(self, index: int) -> np.ndarray: ...


@dataclass(frozen=True)
class SheetLayout:
    """Where everything goes on the sheet, in pixels."""

    size: tuple[int, int]                 # (width, height) of the sheet
    frame_indices: tuple[int, ...]        # the frames shown, in tile order
    tiles: tuple[Box, ...]                # each thumbnail's box
    labels: tuple[Box, ...]               # each thumbnail's label strip (under the thumbnail)
    waveform_title: Box
    waveform_lanes: tuple[Box, ...]       # one per audio channel, top to bottom
    spectrogram_title: Box | None
    spectrogram: Box | None

    @property
    def panel_width(self) -> int:
        return self.size[0] - 2 * GAP


def frame_indices(frame_count: int, tiles: int) -> list[int]:
    """``min(tiles, frame_count)`` evenly spaced frame indices, the first and the last included."""
    n = min(tiles, frame_count)
    if n <= 0:
        return []
    if n == 1:
        return [0]
    # round(k * (F - 1) / (n - 1)) half-up, in integers: distinct and increasing since F >= n.
    return [(2 * k * (frame_count - 1) + (n - 1)) // (2 * (n - 1)) for k in range(n)]


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default()


def _text_height(font) -> int:
    return int(font.getbbox("0123456789.s#Hzk")[3]) + 4


def sheet_layout(frame_count: int, frame_height: int, frame_width: int, channels: int, *, columns: int = 4,
                 rows: int = 2, thumb_width: int = 256, spectrogram: bool = True) -> SheetLayout:
    """The sheet's geometry for a clip of this shape (render_preview draws into exactly these boxes)."""
    picked = frame_indices(frame_count, columns * rows)
    thumb_h = max(1, round(thumb_width * frame_height / max(1, frame_width)))
    text_h = _text_height(_font())
    width = columns * thumb_width + (columns + 1) * GAP
    tiles, labels = [], []
    for k in range(len(picked)):
        r, c = divmod(k, columns)
        left = GAP + c * (thumb_width + GAP)
        top = GAP + r * (thumb_h + text_h + GAP)
        tiles.append((left, top, left + thumb_width, top + thumb_h))
        labels.append((left, top + thumb_h, left + thumb_width, top + thumb_h + text_h))
    y = GAP + math.ceil(len(picked) / columns) * (thumb_h + text_h + GAP)
    right = width - GAP
    wave_title = (GAP, y, right, y + text_h)
    y += text_h
    lanes = []
    for _ in range(channels):
        lanes.append((GAP, y, right, y + LANE_HEIGHT))
        y += LANE_HEIGHT + LANE_GAP
    y += GAP - LANE_GAP
    spec_title = spec = None
    if spectrogram:
        spec_title = (GAP, y, right, y + text_h)
        y += text_h
        spec = (GAP, y, right, y + SPECTROGRAM_HEIGHT)
        y += SPECTROGRAM_HEIGHT + GAP
    return SheetLayout(size=(width, y), frame_indices=tuple(picked), tiles=tuple(tiles), labels=tuple(labels),
                       waveform_title=wave_title, waveform_lanes=tuple(lanes), spectrogram_title=spec_title,
                       spectrogram=spec)


# ---- audio panels ------------------------------------------------------------------------------
def _column_starts(columns: int, duration_s: float, sample_rate: int) -> np.ndarray:
    """First sample of each pixel column when ``columns`` pixels span ``duration_s`` seconds."""
    return np.floor(np.arange(columns) * (duration_s * sample_rate / columns)).astype(np.int64)


def waveform_envelope(channel: np.ndarray, columns: int, duration_s: float, sample_rate: int
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pixel column: (min, max, has_audio). Columns past the end of the audio have has_audio False."""
    starts = _column_starts(columns, duration_s, sample_rate)
    end = min(channel.shape[0], max(1, math.ceil(duration_s * sample_rate)))
    valid = starts < end
    lo = np.zeros(columns, np.float32)
    hi = np.zeros(columns, np.float32)
    if valid.any():
        # reduceat over [starts[i], starts[i+1]) (the last to `end`); a column narrower than a sample
        # gets the one sample it starts on. Each column also takes the next one's first sample, so the
        # trace stays joined when there are fewer samples than pixels.
        data, first = channel[:end], starts[valid]
        n = len(first)
        lo[:n] = np.minimum.reduceat(data, first)
        hi[:n] = np.maximum.reduceat(data, first)
        lo[:n - 1] = np.minimum(lo[:n - 1], data[first[1:]])
        hi[:n - 1] = np.maximum(hi[:n - 1], data[first[1:]])
    return np.clip(lo, -1.0, 1.0), np.clip(hi, -1.0, 1.0), valid


def _waveform_lane(channel: np.ndarray, width: int, height: int, duration_s: float, sample_rate: int) -> np.ndarray:
    lo, hi, valid = waveform_envelope(channel, width, duration_s, sample_rate)
    half = (height - 1) / 2
    top = np.rint(half * (1.0 - hi)).astype(np.int64)      # +1 is the top row
    bottom = np.rint(half * (1.0 - lo)).astype(np.int64)
    rows = np.arange(height)[:, None]
    lane = np.empty((height, width, 3), np.uint8)
    lane[:] = PANEL
    lane[int(round(half)), :] = AXIS
    lane[(rows >= top[None]) & (rows <= bottom[None]) & valid[None]] = WAVE
    return lane


def spectrogram_image(mono: np.ndarray, width: int, height: int, duration_s: float, sample_rate: int) -> np.ndarray:
    """(height, width, 3) uint8: one Hann-windowed FFT centred on each pixel column, dB, colormapped.

    Row 0 is the Nyquist frequency, the last row 0 Hz; each row shows the loudest FFT bin it covers.
    Columns past the end of the audio are left as the panel's background.
    """
    centres = np.floor((np.arange(width) + 0.5) * (duration_s * sample_rate / width)).astype(np.int64)
    valid = centres < mono.shape[0]
    padded = np.concatenate([np.zeros(N_FFT, np.float32), mono.astype(np.float32, copy=False),
                             np.zeros(N_FFT, np.float32)])
    starts = np.minimum(centres, mono.shape[0]) - N_FFT // 2 + N_FFT
    window = np.hanning(N_FFT + 1)[:-1].astype(np.float32)  # periodic Hann
    segments = padded[starts[:, None] + np.arange(N_FFT)[None, :]] * window[None, :]
    magnitude = np.abs(np.fft.rfft(segments, axis=1))
    del segments
    # Normalised so a full-scale sine peaks at 0 dB.
    db = 20.0 * np.log10(np.maximum(magnitude / (window.sum() / 2.0), 1e-12))
    level = np.clip((db - DB_FLOOR) / -DB_FLOOR, 0.0, 1.0)
    bins = level.shape[1]
    row_starts = (np.arange(height) * bins) // height   # row (from the bottom) -> its first bin
    rows = np.maximum.reduceat(level, row_starts, axis=1)[:, ::-1].T   # (height, width), top = Nyquist
    image = COLORMAP[np.rint(rows * 255).astype(np.uint8)]
    image[:, ~valid] = PANEL
    return image


# ---- the sheet ---------------------------------------------------------------------------------
def _check_inputs(frames: FrameSource, fps: float, waveform: np.ndarray, sample_rate: int) -> None:
    shape = tuple(frames.shape)
    if len(shape) != 4 or shape[3] != 3 or shape[0] < 1 or shape[1] < 1 or shape[2] < 1:
        raise BadInputError(f"preview: frames must be (frames, height, width, 3) with at least one frame, got "
                            f"shape {shape}; pass the 'video' array of a frames artifact")
    if not (math.isfinite(fps) and fps > 0):
        raise BadInputError(f"preview: fps={fps!r} must be a positive number; the frames artifact's fps fact is wrong")
    if waveform.ndim != 2 or waveform.shape[0] < 1:
        raise BadInputError(f"preview: waveform must be (channels, samples), got shape {waveform.shape}; pass the "
                            "'waveform' array of an audio artifact")
    if sample_rate <= 0:
        raise BadInputError(f"preview: sample_rate={sample_rate!r} must be positive; the audio artifact's "
                            "sample_rate fact is wrong")


def _thumbnail(frame: np.ndarray, index: int, size: tuple[int, int]) -> Image.Image:
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise BadInputError(f"preview: frame {index} is {frame.dtype} of shape {frame.shape}; frames must be uint8 "
                            "RGB (height, width, 3)")
    return Image.fromarray(frame, "RGB").resize(size, Image.Resampling.LANCZOS)


def _label(width: int, height: int, text: str, font) -> Image.Image:
    # Drawn on its own strip so a long label is clipped at the tile's edge, not spilled onto the next.
    strip = Image.new("RGB", (width, height), BACKGROUND)
    ImageDraw.Draw(strip).text((2, 1), text, font=font, fill=TEXT)
    return strip


def render_preview(frames: np.ndarray | FrameSource, fps: float, waveform: np.ndarray, sample_rate: int, *,
                   columns: int = 4, rows: int = 2, thumb_width: int = 256, spectrogram: bool = True) -> Image.Image:
    """The contact sheet (RGB) for frames (F, H, W, 3) uint8 at ``fps`` and waveform (C, N) in [-1, 1].

    A 1-D waveform is taken as mono. Raises BadInputError on shapes or rates that make no picture.
    """
    waveform = np.asarray(waveform, dtype=np.float32)
    if waveform.ndim == 1:
        waveform = waveform[None, :]
    _check_inputs(frames, fps, waveform, sample_rate)
    frame_count, height, width = (int(d) for d in tuple(frames.shape)[:3])
    channels, samples = waveform.shape
    layout = sheet_layout(frame_count, height, width, channels, columns=columns, rows=rows,
                          thumb_width=thumb_width, spectrogram=spectrogram)
    font = _font()
    sheet = Image.new("RGB", layout.size, BACKGROUND)
    draw = ImageDraw.Draw(sheet)

    for index, tile, label in zip(layout.frame_indices, layout.tiles, layout.labels):
        # One frame at a time: a lazy FrameSource then holds a single full-size frame.
        sheet.paste(_thumbnail(frames[index], index, (tile[2] - tile[0], tile[3] - tile[1])), tile[:2])
        sheet.paste(_label(label[2] - label[0], label[3] - label[1], f"{index / fps:.2f} s  #{index}", font),
                    label[:2])

    duration = frame_count / fps
    panel_w = layout.panel_width
    clean = np.nan_to_num(waveform, nan=0.0, posinf=1.0, neginf=-1.0)
    t = layout.waveform_title
    draw.text((t[0] + 2, t[1] + 1), f"audio  {channels} ch  {sample_rate} Hz  {samples / sample_rate:.2f} s  "
              f"(axis: {duration:.2f} s of video)", font=font, fill=TEXT)
    for c, lane in enumerate(layout.waveform_lanes):
        sheet.paste(Image.fromarray(_waveform_lane(clean[c], panel_w, LANE_HEIGHT, duration, sample_rate), "RGB"),
                    lane[:2])
    if layout.spectrogram is not None:
        t = layout.spectrogram_title
        draw.text((t[0] + 2, t[1] + 1), f"spectrogram  0-{sample_rate / 2000:g} kHz  ({DB_FLOOR:g}..0 dB, "
                  f"Hann {N_FFT})", font=font, fill=TEXT)
        mono = clean.mean(axis=0, dtype=np.float32) if channels > 1 else clean[0]
        spec = spectrogram_image(mono, panel_w, SPECTROGRAM_HEIGHT, duration, sample_rate)
        sheet.paste(Image.fromarray(spec, "RGB"), layout.spectrogram[:2])
    return sheet


def write_png_atomically(image: Image.Image, path: str | Path) -> Path:
    """Write ``image`` as PNG to ``path`` via a temp file beside it and a rename.

    A crash or an error mid-write never leaves a half PNG under the final name (nor, on an error,
    the temp file); a file already at ``path`` stays intact until the new one replaces it whole.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as fh:
            image.save(fh, format="PNG")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


# ==== stage glue (the registry wires these in) ===================================================
class _ArtifactFrames:
    """A frames artifact's 'video' array as a FrameSource: frame i is read (and hash-checked) on demand."""

    def __init__(self, artifact: Artifact):
        self._artifact = artifact
        self.shape = artifact.shape("video")

    def __getitem__(self, index: int) -> np.ndarray:
        return self._artifact.read_numpy("video", time=(index, index + 1))[0]


def run_preview(frames_artifact: Artifact, audio_artifact: Artifact, out_path: Path, params: Params) -> None:
    """Read a frames and an audio artifact, render the sheet, write it to ``out_path`` (.png) atomically.

    Only the frames shown are read from the frames artifact; the waveform is read whole.
    """
    out_path = Path(out_path)
    if out_path.suffix.lower() != ".png":
        raise BadInputError(f"preview: output {out_path} must end in .png")
    image = render_preview(_ArtifactFrames(frames_artifact), float(frames_artifact.facts["fps"]),
                           audio_artifact.read_numpy("waveform"), int(audio_artifact.facts["sample_rate"]),
                           **params.model_dump())
    write_png_atomically(image, out_path)


def estimate_bytes(frame_shape: tuple[int, ...], waveform_shape: tuple[int, ...], params: Params) -> int:
    """Peak bytes run_preview holds beyond the process baseline, counted generously.

    One full frame at a time (six frame-sized buffers: the compressed chunk, its decompressed and
    hash-checked copies, the numpy frame and Pillow's 4-byte-per-pixel copy), the waveform (as read,
    its NaN-cleaned copy and the mono mix), the sheet (Pillow's image, a numpy panel and the PNG
    encoder's buffers), the STFT (per pixel column: gather indices, windowed segment, complex
    spectrum, magnitudes and dB levels), and a fixed slack for zstd / zlib / font working memory.
    Measured (RSS growth of a fresh process): 1920x1080 frames, 5 s stereo 48 kHz, default
    params: 80 MB used, 108 MB estimated.
    """
    frame_count, height, width = (int(d) for d in frame_shape[:3])
    channels, samples = (1, int(waveform_shape[0])) if len(waveform_shape) == 1 else (int(d) for d in waveform_shape)
    layout = sheet_layout(frame_count, height, width, channels, columns=params.columns, rows=params.rows,
                          thumb_width=params.thumb_width, spectrogram=params.spectrogram)
    frame = 6 * height * width * 3
    audio = 3 * channels * samples * 4 + (samples + 2 * N_FFT) * 4 * 2
    sheet = 4 * layout.size[0] * layout.size[1] * 3
    stft = 0
    if params.spectrogram:
        bins = N_FFT // 2 + 1
        stft = layout.panel_width * (N_FFT * (8 + 4 + 4) + bins * (16 + 8 + 8 + 8))
    return int(frame + audio + sheet + stft + LIBRARY_SLACK)


# ---------------------------------------------------------------------------------------------------- the stage

def _estimate(ctx: StageContext) -> MemoryPlan:
    return MemoryPlan(0, estimate_bytes(ctx.inputs["frames"].shape("video"), ctx.inputs["audio"].shape("waveform"),
                                        ctx.params))


STAGE = StageDef(
    name="preview", version=1, summary="frames + waveform -> a PNG contact sheet with the waveform and spectrogram",
    inputs={"frames": Port("frames"), "audio": Port("audio")}, params=Params, output_kind=None,
    estimate=_estimate, run=lambda ctx: run_preview(ctx.inputs["frames"], ctx.inputs["audio"], ctx.out, ctx.params),
)
