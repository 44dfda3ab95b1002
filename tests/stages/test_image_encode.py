"""The image-encode stage: an image file -> its video-VAE latent (a conditioning artifact), run as a process on the
tiny model and on the v1.2.0 conditioning checkpoints (both draws); keyed by the file's content."""

from __future__ import annotations

import hashlib

import shutil
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from PIL import Image

from support import V12_DRAWS as DRAWS, load_npz as load, ltx2, rel, v12_set as fixture_set

from ltx2.artifacts_schema import open_artifact
from ltx2.models.tiny import ensure_tiny_model
from ltx2.models.video_vae import load_video_encoder
from ltx2.models.weights import read_header
from ltx2.spec.layout import CHECKPOINT_PARTS
from ltx2.stages import image_encode
from ltx2.stages.base import execute
from ltx2.stages.contract import Progress
from ltx2.stages.media import crf_roundtrip, load_image, resize_center_crop
from ltx2.stages.registry import StageContext, stage_def

ENCODER_TOL = 1e-5  # README-v12 "Tolerances": encoder outputs, relative


def encode(checkpoint: Path, pixels: np.ndarray) -> np.ndarray:
    return np.array(image_encode.encode_pixels(load_video_encoder(checkpoint), pixels))


def png(path: Path, image: np.ndarray) -> Path:
    Image.fromarray(image).save(path)  # lossless
    return path


@pytest.fixture(scope="module")
def picture(tmp_path_factory) -> Path:
    """A smooth 100x150 picture (another aspect than the 64x96 target: the crop runs on the width)."""
    y, x = np.mgrid[0:100, 0:150]
    img = np.stack([x * 255 // 149, y * 255 // 99, (x + y) * 255 // 248], axis=-1).astype(np.uint8)
    return png(tmp_path_factory.mktemp("media") / "picture.png", img)


def test_the_stage_process_writes_the_encoders_latent_of_the_preprocessed_image(picture, tmp_path) -> None:
    out = tmp_path / "image.zarr"
    r = ltx2("stage", "image-encode", "--in", f"image={picture}", "--out", str(out), "--set", "width=96",
             "--set", "height=64")
    assert "image-encode: wrote" in r.stdout
    art = open_artifact(out)
    assert art.kind == "conditioning"
    ckpt = ensure_tiny_model()["checkpoint"]
    # the tiny checkpoint says "tiny-2.0": the LTX-2 default CRF 33
    pixels = resize_center_crop(crf_roundtrip(load_image(picture), 33), 64, 96)
    want = encode(ckpt, pixels)
    got = np.array(art.read("video"))
    assert got.shape == want.shape == (1, 8, 1, 2, 3)
    assert rel(got, want) <= ENCODER_TOL  # a stage process preloads the optimised BLAS: float32 rounding differs
    assert art.facts == {"medium": "image", "source_sha256": hashlib.sha256(picture.read_bytes()).hexdigest(),
                         "width": 96, "height": 64, "frame_count": 1, "fps": 0.0}
    # crf 0: no re-encode, which here changes the latent
    r = ltx2("stage", "image-encode", "--in", str(picture), "--out", str(tmp_path / "raw.zarr"), "--set", "crf=0")
    raw = np.array(open_artifact(tmp_path / "raw.zarr").read("video"))
    assert rel(raw, encode(ckpt, resize_center_crop(load_image(picture), 64, 96))) <= ENCODER_TOL
    assert rel(raw, got) > 1e-3


def test_the_key_is_the_file_content_size_crf_and_weights(picture, tmp_path) -> None:
    """The same content under another name (another job's copy) keeps the key; another content, size or CRF
    changes it."""
    def key(path: Path, out: str, **params) -> str:
        assert execute("image-encode", [("image", path)], tmp_path / out, params, None, None, None, None) == 0
        return open_artifact(tmp_path / out).cache_key

    copy = shutil.copy(picture, tmp_path / "elsewhere.png")
    base = key(picture, "a.zarr")
    assert key(Path(copy), "b.zarr") == base
    assert key(picture, "c.zarr", width=64) != base
    assert key(picture, "d.zarr", crf=20) != base
    other = png(tmp_path / "other.png", np.full((100, 150, 3), 7, np.uint8))
    assert key(other, "e.zarr") != base
    assert open_artifact(tmp_path / "e.zarr").facts["source_sha256"] == hashlib.sha256(other.read_bytes()).hexdigest()


def test_bad_inputs_are_refused_naming_the_file(tmp_path, picture) -> None:
    wav = tmp_path / "a.wav"
    wav.write_bytes(b"RIFF")  # truncated: unreadable
    cases = [([f"image={tmp_path / 'missing.png'}"], [], "not found"),
             ([f"image={tmp_path}"], [], "is not a file"),
             ([f"image={wav}"], [], str(wav)),
             ([], [], "--in image=PATH"),
             ([f"image={picture}"], ["--set", "width=100"], "multiple of 32")]
    for inputs, sets, words in cases:
        args = [a for i in inputs for a in ("--in", i)]
        r = ltx2("stage", "image-encode", *args, "--out", str(tmp_path / "x.zarr"), *sets, check=False)
        assert r.returncode == 2 and words in r.stderr + r.stdout, (inputs, r.stderr)
    assert not (tmp_path / "x.zarr").exists()


def test_planning_hooks_on_the_tiny_model(picture, tmp_path) -> None:
    ckpt = ensure_tiny_model()["checkpoint"]
    sd = stage_def("image-encode")
    ctx = StageContext(sd, {"image": picture}, tmp_path / "o.zarr", sd.parse_params({"width": 128, "height": 64}),
                       {"checkpoint": ckpt}, "", None, Progress("image-encode", None))
    out = sd.predict(ctx)
    assert out.shapes == {"video": (1, 8, 1, 2, 4)}
    assert out.facts["source_sha256"] == hashlib.sha256(picture.read_bytes()).hexdigest()
    plan = sd.estimate(ctx)
    enc = [t for k, t in read_header(ckpt).tensors.items() if k.startswith(CHECKPOINT_PARTS["video_encoder"])]
    assert plan.weights_bytes == 4 * sum(int(np.prod(t.shape)) for t in enc)
    # one frame's activations at least hold the first res block's input (width x voxels after the patchify)
    cfg = image_encode.vae_config(ctx)
    assert plan.activations_bytes >= 11 * cfg.latent_channels * (64 // 4) * (128 // 4) * 4
    sd.check(ctx)  # an image, a size on the grid, a checkpoint with the encoder: nothing to refuse


def test_activation_estimate_bounds_the_measured_peak() -> None:
    """One frame at 256x384 through the tiny encoder (its convolution buffers dominate, as at the real width; the
    full-size encoder's shapes measured 214 MiB there against 276 MiB estimated)."""
    enc = load_video_encoder(ensure_tiny_model()["checkpoint"])
    x = mx.random.uniform(-1, 1, (1, 1, 256, 384, 3), key=mx.random.key(0))
    mx.eval(x, enc.parameters())
    mx.reset_peak_memory()
    base = mx.get_active_memory()
    mx.eval(enc(x))
    measured = mx.get_peak_memory() - base
    est = image_encode.activation_bytes(enc.cfg, 256, 384)
    assert measured <= est <= 4 * measured, (measured, est)


# ----------------------------------------------------------------------------------------------- v1.2.0 parity

@DRAWS
@pytest.mark.parametrize("case, checkpoint", [("cond_i2v_distilled_ltx23", "cond_ltx23_model"),
                                              ("cond_i2v_distilled_ltx2", "cond_ltx2_model")])
def test_the_encoder_gives_the_official_image_latents(draw, case, checkpoint) -> None:
    folder = fixture_set(draw)
    z = load(folder, case)
    ckpt = folder / f"{checkpoint}.safetensors"
    stages = [s for s in ("s1", "s2") if f"{s}_image0_pixels" in z]
    assert stages == (["s1", "s2"] if case.endswith("ltx23") else ["s1"])
    for s in stages:
        assert rel(encode(ckpt, z[f"{s}_image0_pixels"]), z[f"{s}_image0_latent"]) <= ENCODER_TOL, s


@DRAWS
@pytest.mark.parametrize("case, checkpoint", [("cond_i2v_distilled_ltx23", "cond_ltx23_model"),
                                              ("cond_i2v_distilled_ltx2", "cond_ltx2_model")])
def test_the_stage_end_to_end_from_the_recompressed_image(draw, case, checkpoint, tmp_path) -> None:
    """The image after the official H.264 round trip, saved losslessly, through the stage with crf 0 (no second
    re-encode): preprocessing and encoder together give the official stage-1 latent."""
    folder = fixture_set(draw)
    z = load(folder, case)
    image = png(tmp_path / "image0.png", z["image0_crf_u8"])
    out = tmp_path / "s1.zarr"
    ltx2("stage", "image-encode", "--in", f"image={image}", "--out", str(out), "--set", "width=96", "--set",
         "height=64", "--set", "crf=0", "--weights", f"checkpoint={folder / f'{checkpoint}.safetensors'}")
    assert rel(open_artifact(out).read("video"), z["s1_image0_latent"]) <= ENCODER_TOL
