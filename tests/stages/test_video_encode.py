"""The video-encode stage: a video file (and a mask video) -> a conditioning artifact, run as a process on the tiny
model with lossless mp4s the tests write, against the same frames encoded in this process; the v1.2.0 retake and
IC-LoRA encodings (both draws), from the fixtures' pixels and from their decoded clips written as files."""

from __future__ import annotations

import hashlib

from fractions import Fraction
from pathlib import Path

import av
import mlx.core as mx
import numpy as np
import pytest

from support import V12_DRAWS as DRAWS, load_npz as load, ltx2, rel, v12_set as fixture_set

from ltx2.artifacts_schema import open_artifact
from ltx2.models.ops import conform_length
from ltx2.models.tiny import ensure_tiny_model
from ltx2.models.video_vae import SpatialTiling, TemporalTiling, load_video_encoder
from ltx2.models.video_vae.encode_tiling import EncodeTiling, tiled_encode
from ltx2.stages import video_encode
from ltx2.stages.contract import Progress
from ltx2.stages.media import mask_to_latent_weights, resize_center_crop
from ltx2.stages.registry import StageContext, stage_def

ENCODER_TOL = 1e-5  # README-v12 "Tolerances": encoder outputs, relative
COND_CHECKPOINT = "cond_ltx23_model.safetensors"


def write_mp4(path: Path, frames: np.ndarray, fps: float) -> Path:
    """Lossless H.264 in RGB (libx264rgb, crf 0): decoding gives back exactly ``frames``."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264rgb", rate=Fraction(fps).limit_denominator(1001))
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "rgb24"
        s.options = {"crf": "0", "preset": "ultrafast"}
        for f in frames:
            for packet in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    return path


def encode_pixels(checkpoint: Path, pixels: np.ndarray, tiling=None) -> np.ndarray:
    """(1, 3, F, H, W) -> (1, C, F', h, w), in this process."""
    return np.array(video_encode.encode_clip(load_video_encoder(checkpoint), pixels, tiling))


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """25 frames of moving gradients at 80x112, 24 fps (another aspect than the 64x96 target: the crop runs on the
    height), as a lossless mp4."""
    t, y, x = np.mgrid[0:25, 0:80, 0:112]
    frames = np.stack([(x * 2 + t * 9) % 256, (y * 3 + t * 5) % 256, (x + y + t * 17) % 256], axis=-1).astype(np.uint8)
    return write_mp4(tmp_path_factory.mktemp("media") / "clip.mp4", frames, 24), frames


def run_stage(out: Path, video: Path, *sets: str, mask: Path | None = None, weights: Path | None = None,
              check: bool = True):
    args = ["stage", "video-encode", "--in", f"video={video}", "--out", str(out)]
    if mask is not None:
        args += ["--in", f"mask={mask}"]
    if weights is not None:
        args += ["--weights", f"checkpoint={weights}"]
    for s in sets:
        args += ["--set", s]
    return ltx2(*args, check=check)


def test_the_stage_process_encodes_the_window_of_the_clip(clip, tmp_path) -> None:
    path, frames = clip
    out = tmp_path / "v.zarr"
    r = run_stage(out, path, "width=96", "height=64", "frames=17", "fps=24", "start=0.25")
    assert "video-encode: wrote" in r.stdout
    art = open_artifact(out)
    assert art.kind == "conditioning"
    # frames [6, 23): presentation times in [0.25, 0.25 + 17/24)
    want = encode_pixels(ensure_tiny_model()["checkpoint"], resize_center_crop(frames[6:23], 64, 96))
    got = np.array(art.read("video"))
    assert got.shape == want.shape == (1, 8, 3, 2, 3)
    assert rel(got, want) <= ENCODER_TOL  # a stage process preloads the optimised BLAS: float32 rounding differs
    assert art.facts == {"medium": "video", "source_sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "width": 96, "height": 64,
                         "frame_count": 17, "fps": 24.0}
    assert "attention" not in art.arrays


def test_tiles_and_a_short_source(clip, tmp_path) -> None:
    """Tiled: the in-process tiled encode of the same frames. A window past the clip's end: the 25 frames give 4
    latent frames, conformed to the 41-frame clip's 6 by zeros (the official _conform_latent_length)."""
    path, frames = clip
    out = tmp_path / "v.zarr"
    run_stage(out, path, "width=128", "height=96", "frames=41", "fps=24",
              "tiling={spatial_tile: 96, spatial_overlap: 64, temporal_tile: 24, temporal_overlap: 16}")
    tiling = EncodeTiling(SpatialTiling(96, 64), TemporalTiling(24, 16))
    pixels = resize_center_crop(frames, 96, 128)
    want = encode_pixels(ensure_tiny_model()["checkpoint"], pixels, tiling)
    got = np.array(open_artifact(out).read("video"))
    assert got.shape == (1, 8, 6, 3, 4)
    assert rel(got[:, :, :4], want) <= ENCODER_TOL
    assert not got[:, :, 4:].any()
    assert rel(want, encode_pixels(ensure_tiny_model()["checkpoint"], pixels)) > 1e-3  # the tiles did matter
    assert open_artifact(out).facts["frame_count"] == 41


def test_first_frames_reads_any_rate_and_a_mask_gives_attention_weights(tmp_path, clip) -> None:
    """IC-LoRA's reader: the first `frames` frames whatever the rate (a 30 fps file for a 24 fps clip); the mask
    video (dark left third) read at 2x the encode size and reduced to one weight per latent token."""
    _, frames = clip
    source = write_mp4(tmp_path / "ref.mp4", frames, 30)
    m = np.full((17, 128, 192, 3), 255, np.uint8)
    m[:, :, :64] = 0
    mask = write_mp4(tmp_path / "mask.mp4", m, 30)
    out = tmp_path / "v.zarr"
    run_stage(out, source, "width=96", "height=64", "frames=17", "fps=24", "read=first_frames", "mask_scale=2",
              mask=mask)
    art = open_artifact(out)
    want = encode_pixels(ensure_tiny_model()["checkpoint"], resize_center_crop(frames[:17], 64, 96))
    assert rel(art.read("video"), want) <= ENCODER_TOL
    gray = (resize_center_crop(m, 128, 192).mean(axis=1, keepdims=True) + 1) / 2
    weights = mask_to_latent_weights(gray, (3, 2, 3))
    got = np.array(art.read("attention"))
    assert got.shape == (1, 18)
    np.testing.assert_allclose(got, weights, atol=1e-6)
    assert (got.reshape(3, 2, 3)[:, :, 0] == 0).all() and (got.reshape(3, 2, 3)[:, :, 2] == 1).all()


def test_a_mask_shorter_than_the_reference_is_refused(tmp_path, clip) -> None:
    """A one-frame mask gives one latent frame of weights (as the official reduction does), not the reference's 3."""
    path, _ = clip
    mask = write_mp4(tmp_path / "still.mp4", np.full((1, 64, 96, 3), 255, np.uint8), 24)
    r = run_stage(tmp_path / "v.zarr", path, "width=96", "height=64", "frames=17", "fps=24", mask=mask, check=False)
    assert r.returncode == 2, r.stderr
    assert "1 latent frame(s)" in r.stderr and "17 frames" in r.stderr


def test_a_source_at_another_rate_is_refused_for_a_window(tmp_path, clip) -> None:
    _, frames = clip
    source = write_mp4(tmp_path / "ref30.mp4", frames, 30)
    r = run_stage(tmp_path / "v.zarr", source, "width=96", "height=64", "frames=17", "fps=24", check=False)
    assert r.returncode == 2, r.stderr
    assert "30 fps" in r.stderr and "fps: 30" in r.stderr


@pytest.mark.parametrize("setting,needle", [("frames=20", "1 + 8k"), ("width=100", "multiple of 32"),
                                            ("tiling={spatial_tile: 128, spatial_overlap: 32}", "64 px")])
def test_bad_parameters_are_refused(tmp_path, clip, setting, needle) -> None:
    path, _ = clip
    base = {"width": "96", "height": "64", "frames": "17", "fps": "24"}
    key, value = setting.split("=", 1)
    base[key] = value
    r = run_stage(tmp_path / "v.zarr", path, *(f"{k}={v}" for k, v in base.items()), check=False)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr


def _ctx(params: dict, budget: int | None, mask: bool = False) -> StageContext:
    st = stage_def("video-encode")
    inputs = {"video": Path("/nonexistent/clip.mp4")}
    if mask:
        inputs["mask"] = Path("/nonexistent/mask.mp4")
    return StageContext(st, inputs, Path("/tmp/unused.zarr"), st.parse_params(params),
                        {"checkpoint": ensure_tiny_model()["checkpoint"]}, "", budget, Progress("video-encode", None))


def test_predicted_output_and_the_planners_tile_choices() -> None:
    ctx = _ctx({"width": 768, "height": 512, "frames": 121, "fps": 24}, budget=2 << 30, mask=True)
    pred = video_encode.predict(ctx)
    assert pred.shapes == {"video": (1, 8, 16, 16, 24), "attention": (1, 16 * 16 * 24)}
    assert pred.facts["frame_count"] == 121
    ch = list(video_encode.choices(ctx))
    assert ch[0] == ({"tiling": None}, "untiled")
    # the planner's pick fits the budget, the smallest tiles come last
    fitted = [u for u, _ in ch[1:-1]]
    assert len(fitted) == 1 and fitted[0]["tiling"] is not None
    st = stage_def("video-encode")
    trial = StageContext(st, ctx.inputs, ctx.out, st.parse_params({**ctx.params.key_material(), **fitted[0]}),
                         ctx.weights, "", ctx.budget, ctx.progress)
    assert video_encode.estimate(trial).total <= 2 << 30 < video_encode.estimate(ctx).total
    assert ch[-1][0]["tiling"].spatial_tile == 96


# -- v1.2.0 parity ------------------------------------------------------------------------------------------------
@DRAWS
def test_the_retake_source_latent_equals_v12(draw: int) -> None:
    """cond_retake_ltx23: ``source_video_pixels`` -> ``tiled_encode(TileSizeConfig.default())`` (one tile at 64x96x25)
    -> ``source_video_latent``; the untiled encoder gives the same."""
    folder = fixture_set(draw)
    z = load(folder, "cond_retake_ltx23")
    ckpt = folder / COND_CHECKPOINT
    pixels = z["source_video_pixels"]
    for tiling in (None, EncodeTiling.default()):
        got = encode_pixels(ckpt, pixels, tiling)
        assert got.shape == z["source_video_latent"].shape
        assert rel(got, z["source_video_latent"]) <= ENCODER_TOL, tiling


@DRAWS
def test_the_ic_lora_reference_latent_equals_v12(draw: int) -> None:
    folder = fixture_set(draw)
    z = load(folder, "cond_ic_lora_ltx23")
    got = encode_pixels(folder / COND_CHECKPOINT, z["ref_video_pixels"])
    assert rel(got, z["ref_video_latent"]) <= ENCODER_TOL
    # the mask's latent weights, before the pipeline's strength (0.8)
    weights = mask_to_latent_weights(z["conditioning_attention_mask_pixels"], got.shape[2:])
    np.testing.assert_allclose(weights * 0.8, z["ref_latent_attention_weights"], atol=1e-6)


@DRAWS
def test_the_stage_on_the_decoded_retake_source_equals_v12(draw: int, tmp_path) -> None:
    """The fixture's decoded source clip as a lossless 24 fps mp4 through the stage process (window read, default
    encode tiles as the official retake): ``source_video_latent``."""
    folder = fixture_set(draw)
    z = load(folder, "cond_retake_ltx23")
    source = write_mp4(tmp_path / "source.mp4", z["source_video_decoded_u8"], 24)
    out = tmp_path / "v.zarr"
    run_stage(out, source, "width=96", "height=64", "frames=25", "fps=24",
              "tiling={spatial_tile: 768, spatial_overlap: 64, temporal_tile: 80, temporal_overlap: 24}",
              weights=folder / COND_CHECKPOINT)
    assert rel(open_artifact(out).read("video"), z["source_video_latent"]) <= ENCODER_TOL


@DRAWS
def test_the_stage_on_the_decoded_ic_lora_reference_equals_v12(draw: int, tmp_path) -> None:
    """The reference clip (80x112) read as IC-LoRA reads it, resized and cropped to 64x96: ``ref_video_latent``. (The
    fixture's mask holds continuous values an 8-bit mask video cannot carry: its reduction is checked above.)"""
    folder = fixture_set(draw)
    z = load(folder, "cond_ic_lora_ltx23")
    source = write_mp4(tmp_path / "ref.mp4", z["ref_video_decoded_u8"], 24)
    out = tmp_path / "v.zarr"
    run_stage(out, source, "width=96", "height=64", "frames=17", "fps=24", "read=first_frames",
              weights=folder / COND_CHECKPOINT)
    assert rel(open_artifact(out).read("video"), z["ref_video_latent"]) <= ENCODER_TOL


def test_conform_length_truncates_or_zero_pads() -> None:
    x = mx.arange(2 * 3 * 4).reshape(1, 2, 4, 3).astype(mx.float32)
    assert np.array_equal(np.array(conform_length(x, 2)), np.array(x)[:, :, :2])
    padded = np.array(conform_length(x, 6))
    assert padded.shape == (1, 2, 6, 3) and np.array_equal(padded[:, :, :4], np.array(x)) and not padded[:, :, 4:].any()


def test_tiled_encode_of_one_tile_is_the_stage_encoder(clip) -> None:
    """encode_clip with no tiles is the encoder on the channels-last clip."""
    _, frames = clip
    pixels = resize_center_crop(frames[:9], 64, 96)
    enc = load_video_encoder(ensure_tiny_model()["checkpoint"])
    a = np.array(video_encode.encode_clip(enc, pixels, None))
    b = np.array(tiled_encode(enc, mx.array(np.moveaxis(pixels, 1, -1)), None)).transpose(0, 4, 1, 2, 3)
    assert np.array_equal(a, b)
