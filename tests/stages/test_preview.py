"""The preview stage's contact sheet: layout, the frames it shows, the audio panels, determinism, atomic write."""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from ltx2.artifacts_schema import ArtifactWriter, Producer, open_artifact
from ltx2.spec.errors import BadInputError
from ltx2.stages import preview
from ltx2.stages.preview import (AXIS, GAP, LANE_GAP, LANE_HEIGHT, PANEL, SPECTROGRAM_HEIGHT, WAVE, Params,
                                 estimate_bytes, frame_indices, render_preview, run_preview, sheet_layout,
                                 write_png_atomically)


def coded_frames(count: int, height: int = 48, width: int = 64) -> np.ndarray:
    """Uniform frames whose colour encodes their index (distinct for count <= 256)."""
    i = np.arange(count)
    colours = np.stack([i, 255 - i, (i * 7) % 256], axis=1).astype(np.uint8)
    return np.broadcast_to(colours[:, None, None, :], (count, height, width, 3)).copy()


def colour_of(index: int) -> tuple[int, int, int]:
    return index, 255 - index, (index * 7) % 256


def sine(freq: float, seconds: float, sample_rate: int, amplitude: float = 0.8) -> np.ndarray:
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def centre(box) -> tuple[int, int]:
    return (box[1] + box[3]) // 2, (box[0] + box[2]) // 2   # (row, column)


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


# ---- geometry ----------------------------------------------------------------------------------
def test_sheet_has_the_expected_size():
    frames, sr = coded_frames(121, 48, 64), 16000
    wave = np.stack([sine(440, 121 / 24, sr)] * 2)
    image = render_preview(frames, 24.0, wave, sr, columns=4, rows=2, thumb_width=128)
    layout = sheet_layout(121, 48, 64, 2, columns=4, rows=2, thumb_width=128)
    text_h = layout.labels[0][3] - layout.labels[0][1]
    assert text_h >= 10  # room for the default font's digits
    thumb_h = 96  # 128 * 48 / 64
    width = 4 * 128 + 5 * GAP
    height = (GAP + 2 * (thumb_h + text_h + GAP)             # two rows of tiles with labels
              + text_h + 2 * LANE_HEIGHT + LANE_GAP + GAP      # waveform title and two lanes
              + text_h + SPECTROGRAM_HEIGHT + GAP)             # spectrogram title and panel
    assert image.size == layout.size == (width, height)
    assert image.mode == "RGB"
    assert all(b[2] - b[0] == 128 and b[3] - b[1] == thumb_h for b in layout.tiles)

    # No spectrogram: that panel's height goes; one more channel: one more lane.
    flat = render_preview(frames, 24.0, wave, sr, columns=4, rows=2, thumb_width=128, spectrogram=False)
    assert flat.size == (width, height - (text_h + SPECTROGRAM_HEIGHT + GAP))
    three = render_preview(frames, 24.0, np.concatenate([wave, wave[:1]]), sr, columns=4, rows=2, thumb_width=128)
    assert three.size == (width, height + LANE_HEIGHT + LANE_GAP)


def test_frame_indices_are_evenly_spaced_with_first_and_last():
    assert frame_indices(121, 8) == [0, 17, 34, 51, 69, 86, 103, 120]
    assert frame_indices(9, 5) == [0, 2, 4, 6, 8]
    assert frame_indices(8, 8) == list(range(8))
    assert frame_indices(3, 8) == [0, 1, 2]
    assert frame_indices(1, 8) == [0]
    for count in range(1, 60):
        for tiles in range(1, 12):
            got = frame_indices(count, tiles)
            assert len(got) == min(count, tiles) and got[0] == 0
            assert len(got) == 1 or got[-1] == count - 1
            assert all(a < b for a, b in zip(got, got[1:]))


# ---- the tiles -----------------------------------------------------------------------------------
@pytest.mark.parametrize("count,columns,rows,shown", [(121, 4, 2, [0, 17, 34, 51, 69, 86, 103, 120]),
                                                      (5, 4, 2, [0, 1, 2, 3, 4]),
                                                      (30, 3, 3, [0, 4, 7, 11, 15, 18, 22, 25, 29])])
def test_each_tile_shows_its_frame(count, columns, rows, shown):
    frames = coded_frames(count)
    image = pixels(render_preview(frames, 24.0, np.zeros((1, 8000), np.float32), 16000, columns=columns, rows=rows,
                                  thumb_width=96))
    layout = sheet_layout(count, 48, 64, 1, columns=columns, rows=rows, thumb_width=96)
    assert list(layout.frame_indices) == shown
    assert len(layout.tiles) == min(count, columns * rows)
    for index, tile in zip(layout.frame_indices, layout.tiles):
        got = image[centre(tile)].astype(int)
        assert np.abs(got - colour_of(index)).max() <= 1, (index, got)
        # The whole thumbnail is that frame (uniform), not just its centre.
        region = image[tile[1]:tile[3], tile[0]:tile[2]].astype(int)
        assert np.abs(region - colour_of(index)).max() <= 1
    # Fewer frames than cells: the sheet has only the rows it needs.
    assert layout.tiles[-1][1] < layout.waveform_title[1]
    if count < columns * rows:
        assert len({t[1] for t in layout.tiles}) == -(-count // columns)


def test_labels_carry_text():
    frames = coded_frames(40)
    image = pixels(render_preview(frames, 24.0, np.zeros((1, 100), np.float32), 16000))
    layout = sheet_layout(40, 48, 64, 1)
    for label in layout.labels:
        strip = image[label[1]:label[3], label[0]:label[2]]
        assert (strip.max(axis=2) > 150).sum() > 20   # bright text pixels on the dark strip


# ---- the waveform --------------------------------------------------------------------------------
def lane_pixels(image: np.ndarray, lane) -> np.ndarray:
    return image[lane[1]:lane[3], lane[0]:lane[2]]


def is_colour(region: np.ndarray, colour) -> np.ndarray:
    return np.all(region == np.array(colour, np.uint8), axis=-1)


def test_waveform_is_drawn_where_loud_and_blank_where_silent():
    sr, fps, count = 16000, 24.0, 48              # 2 s of video
    loud = sine(2000, 2.0, sr, 0.9)               # 8 samples a period: each pixel column sees whole periods
    half = loud.copy()
    half[: len(half) // 2] = 0.0                  # silent first second
    image = pixels(render_preview(coded_frames(count), fps, np.stack([loud, half]), sr, spectrogram=False))
    layout = sheet_layout(count, 48, 64, 2, spectrogram=False)
    lane0, lane1 = (lane_pixels(image, lane) for lane in layout.waveform_lanes)
    height, width = lane1.shape[:2]
    middle = int(round((height - 1) / 2))
    first, second = slice(0, width // 2 - 2), slice(width // 2 + 2, width)

    # Silent half: nothing off the centre line; the centre line itself is the flat (zero) trace.
    off_axis = np.delete(lane1[:, first], middle, axis=0)
    assert is_colour(off_axis, PANEL).all()
    assert is_colour(lane1[middle, first], WAVE).all()
    # Loud half: every column filled from near the top to near the bottom (a 0.9 sine's min/max).
    drawn = is_colour(lane1[:, second], WAVE)
    assert drawn[3:-3].all()
    assert drawn.sum(axis=0).min() >= 0.85 * height
    # The channels have their own lanes: channel 0 is loud all along.
    assert is_colour(lane0[3:-3], WAVE).all()


def test_waveform_time_axis_spans_the_video():
    sr, fps, count = 16000, 24.0, 48              # 2 s of video, 1 s of audio, then 2 s more audio than video
    short = sine(2000, 1.0, sr, 0.9)
    image = pixels(render_preview(coded_frames(count), fps, short[None], sr, spectrogram=False))
    lane = lane_pixels(image, sheet_layout(count, 48, 64, 1, spectrogram=False).waveform_lanes[0])
    width = lane.shape[1]
    assert is_colour(lane[3:-3, : width // 2 - 1], WAVE).all()      # the audio's second: the left half
    assert not is_colour(lane[:, width // 2 + 1:], WAVE).any()      # no audio: blank, only the axis
    assert is_colour(lane[int(round((lane.shape[0] - 1) / 2)), width // 2 + 1:], AXIS).all()

    # The spectrogram shares the axis: no audio, no spectrum (the panel's background, not "silence").
    image = pixels(render_preview(coded_frames(count), fps, short[None], sr))
    box = sheet_layout(count, 48, 64, 1).spectrogram
    spec = image[box[1]:box[3], box[0]:box[2]]
    assert is_colour(spec[:, spec.shape[1] // 2 + 1:], PANEL).all()
    assert not is_colour(spec[:, : spec.shape[1] // 2 - 1], PANEL).any()

    # Audio longer than the video: only the video's duration is shown (the quiet tail never appears).
    long = np.concatenate([np.zeros(2 * sr, np.float32), sine(2000, 2.0, sr, 0.9)])
    image = pixels(render_preview(coded_frames(count), fps, long[None], sr, spectrogram=False))
    lane = lane_pixels(image, sheet_layout(count, 48, 64, 1, spectrogram=False).waveform_lanes[0])
    assert not is_colour(np.delete(lane, int(round((lane.shape[0] - 1) / 2)), axis=0), WAVE).any()


# ---- the spectrogram ------------------------------------------------------------------------------
@pytest.mark.parametrize("freq", [1000.0, 3000.0, 6500.0])
def test_spectrogram_brightest_row_is_the_sine_frequency(freq):
    sr, fps, count = 16000, 24.0, 48
    image = pixels(render_preview(coded_frames(count), fps, sine(freq, 2.0, sr)[None], sr))
    box = sheet_layout(count, 48, 64, 1).spectrogram
    panel = image[box[1]:box[3], box[0]:box[2]].astype(np.float64)
    assert panel.shape[0] == SPECTROGRAM_HEIGHT
    inner = panel[:, 20:-20]                      # away from the clip's edges (the window sees silence there)
    luminance = (inner @ np.array([0.299, 0.587, 0.114])).mean(axis=1)
    # Linear axis: the top row is Nyquist, the bottom row 0 Hz.
    expected = SPECTROGRAM_HEIGHT - 1 - freq / (sr / 2) * SPECTROGRAM_HEIGHT
    assert abs(int(np.argmax(luminance)) - expected) <= 1.5
    # Far from the tone the panel is dark (the full-scale-referenced dB floor).
    far = int(expected) + 30 if expected < SPECTROGRAM_HEIGHT / 2 else int(expected) - 30
    assert luminance[far] < 0.25 * luminance.max()


def test_spectrogram_mixes_the_channels():
    sr, fps, count = 16000, 24.0, 48
    wave = np.stack([sine(1000, 2.0, sr), sine(5000, 2.0, sr)])
    image = pixels(render_preview(coded_frames(count), fps, wave, sr))
    box = sheet_layout(count, 48, 64, 2).spectrogram
    luminance = (image[box[1]:box[3], box[0] + 20:box[2] - 20].astype(np.float64)
                 @ np.array([0.299, 0.587, 0.114])).mean(axis=1)
    for freq in (1000, 5000):
        row = round(SPECTROGRAM_HEIGHT - 1 - freq / (sr / 2) * SPECTROGRAM_HEIGHT)
        assert luminance[row - 1:row + 2].max() > 0.8 * luminance.max()


# ---- determinism and short inputs ------------------------------------------------------------------
def test_same_inputs_give_identical_png_bytes(tmp_path):
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, (17, 40, 72, 3), dtype=np.uint8)
    wave = (rng.standard_normal((2, 12000)) * 0.3).astype(np.float32)
    a = png_bytes(render_preview(frames, 25.0, wave, 22050))
    b = png_bytes(render_preview(frames.copy(), 25.0, wave.copy(), 22050))
    assert a == b
    write_png_atomically(render_preview(frames, 25.0, wave, 22050), tmp_path / "one.png")
    write_png_atomically(render_preview(frames, 25.0, wave, 22050), tmp_path / "two.png")
    assert (tmp_path / "one.png").read_bytes() == (tmp_path / "two.png").read_bytes() == a
    # ... and the inputs matter: a different frame shown gives different bytes.
    assert 5 in frame_indices(17, 8)
    frames[5] ^= 0xFF
    assert png_bytes(render_preview(frames, 25.0, wave, 22050)) != a


@pytest.mark.parametrize("wave_shape", [(800,), (1, 800)])
def test_one_frame_and_mono_work(wave_shape):
    frames = coded_frames(1) + 0
    frames[0] = (200, 30, 90)
    wave = sine(440, 0.05, 16000).reshape(wave_shape)   # 800 samples
    image = render_preview(frames, 24.0, wave, 16000)
    layout = sheet_layout(1, 48, 64, 1)
    assert image.size == layout.size
    assert layout.frame_indices == (0,) and len(layout.tiles) == 1 and len(layout.waveform_lanes) == 1
    px = pixels(image)
    assert tuple(px[centre(layout.tiles[0])]) == (200, 30, 90)
    # 1 frame at 24 fps is 1/24 s = 666 of the 800 samples, fewer than the lane's pixel columns: the trace is
    # still continuous (every column drawn, joined to the next) and reaches the sine's peaks.
    drawn = is_colour(lane_pixels(px, layout.waveform_lanes[0]), WAVE)
    assert drawn.any(axis=0).all()
    rows = np.nonzero(drawn.any(axis=1))[0]
    assert rows.min() <= 0.15 * LANE_HEIGHT and rows.max() >= 0.85 * LANE_HEIGHT
    assert drawn.sum(axis=0).max() < 0.2 * LANE_HEIGHT   # a line, not a filled band


def test_silent_and_empty_audio_still_render():
    frames = coded_frames(10)
    for wave in (np.zeros((2, 5000), np.float32), np.zeros((1, 0), np.float32)):
        image = pixels(render_preview(frames, 24.0, wave, 16000))
        layout = sheet_layout(10, 48, 64, wave.shape[0])
        for lane in layout.waveform_lanes:
            assert not is_colour(np.delete(lane_pixels(image, lane), (LANE_HEIGHT - 1) // 2 + 1, axis=0), WAVE).any()
    nan = np.full((1, 5000), np.nan, np.float32)
    render_preview(frames, 24.0, nan, 16000)  # drawn as silence, not a crash


def test_inputs_that_make_no_picture_are_bad_input():
    frames, wave = coded_frames(4), np.zeros((1, 100), np.float32)
    with pytest.raises(BadInputError, match="frames must be"):
        render_preview(frames[:0], 24.0, wave, 16000)
    with pytest.raises(BadInputError, match="frames must be"):
        render_preview(frames[..., :2], 24.0, wave, 16000)
    with pytest.raises(BadInputError, match="fps"):
        render_preview(frames, 0.0, wave, 16000)
    with pytest.raises(BadInputError, match="waveform must be"):
        render_preview(frames, 24.0, np.zeros((1, 2, 3), np.float32), 16000)
    with pytest.raises(BadInputError, match="sample_rate"):
        render_preview(frames, 24.0, wave, 0)
    with pytest.raises(BadInputError, match="uint8"):
        render_preview(frames.astype(np.float32), 24.0, wave, 16000)


# ---- atomic write ------------------------------------------------------------------------------------
def test_write_png_atomically_writes_a_readable_png_and_no_temp(tmp_path):
    image = render_preview(coded_frames(9), 24.0, np.zeros((1, 100), np.float32), 16000)
    out = write_png_atomically(image, tmp_path / "sub" / "x.png")
    assert out == tmp_path / "sub" / "x.png"
    assert [p.name for p in out.parent.iterdir()] == ["x.png"]
    with Image.open(out) as back:
        assert back.format == "PNG"
        np.testing.assert_array_equal(pixels(back), pixels(image))


def test_a_failed_write_leaves_no_file_and_no_temp(tmp_path, monkeypatch):
    image = render_preview(coded_frames(9), 24.0, np.zeros((1, 100), np.float32), 16000)
    seen = []

    def half_save(fp, *args, **kwargs):
        fp.write(b"\x89PNG\r\n\x1a\n half of it")    # the temp file exists and has bytes in it
        seen.append(Path(fp.name))
        assert seen[-1].exists() and seen[-1].parent == tmp_path and seen[-1].name != "x.png"
        raise OSError("disk full")

    monkeypatch.setattr(image, "save", half_save)
    with pytest.raises(OSError, match="disk full"):
        write_png_atomically(image, tmp_path / "x.png")
    assert seen and not (tmp_path / "x.png").exists()
    assert list(tmp_path.iterdir()) == []

    # An existing preview survives a failed rewrite untouched.
    (tmp_path / "x.png").write_bytes(b"the old preview")
    with pytest.raises(OSError, match="disk full"):
        write_png_atomically(image, tmp_path / "x.png")
    assert (tmp_path / "x.png").read_bytes() == b"the old preview"
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]


# ---- params ----------------------------------------------------------------------------------------
def test_params_defaults_descriptions_and_validation():
    p = Params()
    assert p.model_dump() == {"columns": 4, "rows": 2, "thumb_width": 256, "spectrogram": True}
    assert all(f.description for f in Params.model_fields.values())
    with pytest.raises(ValidationError):
        Params(columns=0)
    with pytest.raises(ValidationError):
        Params(colums=3)          # a typo is refused, not ignored
    with pytest.raises(ValidationError):
        p.rows = 3                # frozen
    assert Params.model_validate_json(p.model_dump_json()) == p


# ---- the stage glue ---------------------------------------------------------------------------------
def write_inputs(tmp_path: Path, frames: np.ndarray, fps: float, wave: np.ndarray, sr: int):
    fw = ArtifactWriter(tmp_path / "frames.zarr", "frames", producer=Producer("decode", "1"), cache_key="kf")
    fw.write_array("video", frames)
    f_path = fw.finalize({"frame_count": frames.shape[0], "height": frames.shape[1], "width": frames.shape[2],
                          "fps": fps})
    aw = ArtifactWriter(tmp_path / "audio.zarr", "audio", producer=Producer("vocode", "1"), cache_key="ka")
    aw.write_array("waveform", wave)
    a_path = aw.finalize({"sample_rate": sr, "channels": wave.shape[0], "sample_count": wave.shape[1]})
    return open_artifact(f_path, "frames"), open_artifact(a_path, "audio")


def test_run_preview_reads_the_artifacts_and_writes_the_sheet(tmp_path, monkeypatch):
    frames = coded_frames(30, 32, 48)
    wave = np.stack([sine(700, 1.25, 16000), sine(2500, 1.25, 16000)])
    frames_art, audio_art = write_inputs(tmp_path, frames, 24.0, wave, 16000)
    params = Params(columns=3, rows=2, thumb_width=64)

    read = []
    real = type(frames_art).read_numpy
    monkeypatch.setattr(type(frames_art), "read_numpy",
                        lambda self, name, time=None: read.append((self.kind, name, time)) or real(self, name, time))
    out = tmp_path / "clip.preview.png"
    run_preview(frames_art, audio_art, out, params)
    expected = render_preview(frames, 24.0, wave, 16000, columns=3, rows=2, thumb_width=64)
    with Image.open(out) as got:
        np.testing.assert_array_equal(pixels(got), pixels(expected))
    # Only the six frames shown were read from the frames artifact, one each.
    assert [r for r in read if r[0] == "frames"] == [("frames", "video", (i, i + 1)) for i in frame_indices(30, 6)]
    assert ("audio", "waveform", None) in read

    with pytest.raises(BadInputError, match=r"\.png"):
        run_preview(frames_art, audio_art, tmp_path / "clip.jpg", params)


def test_estimate_bytes_is_conservative_and_ignores_unshown_frames(tmp_path):
    params = Params(thumb_width=128)
    frames = np.random.default_rng(1).integers(0, 256, (40, 180, 320, 3), dtype=np.uint8)
    wave = np.stack([sine(300, 40 / 24, 24000)] * 2)
    frames_art, audio_art = write_inputs(tmp_path, frames, 24.0, wave, 24000)
    del frames
    tracemalloc.start()
    try:
        run_preview(frames_art, audio_art, tmp_path / "p.png", params)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    estimate = estimate_bytes((40, 180, 320, 3), wave.shape, params)
    assert peak <= estimate
    # Frames not shown are never read: more frames of the same size cost nothing more.
    assert estimate_bytes((4000, 180, 320, 3), wave.shape, params) == estimate
    assert estimate_bytes((40, 360, 640, 3), wave.shape, params) > estimate
    assert estimate_bytes((40, 180, 320, 3), (2, 10 * wave.shape[1]), params) > estimate
    assert estimate_bytes((40, 180, 320, 3), wave.shape, Params(thumb_width=128, spectrogram=False)) < estimate
    assert estimate_bytes((40, 180, 320, 3), wave.shape[1:], params) < estimate   # mono (N,)
    assert preview.N_FFT * 4 * 8 < estimate   # the STFT buffers are counted
