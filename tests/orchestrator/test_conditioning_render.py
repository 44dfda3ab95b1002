"""The conditioning workflows end to end on the tiny LTX-2.3 model, from the example jobs (examples/*.yaml with
their media): each renders, keeps what it must keep exactly, is cached per file, and resumes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import wave
from pathlib import Path

import av
import numpy as np
import pytest

from ltx2.artifacts_schema import open_artifact

from support import ROOT, ltx2, statuses, write_job

pytestmark = pytest.mark.slow  # every test here renders

EXAMPLES = ROOT / "examples"


def job_copy(folder: Path, example: str, **changes) -> Path:
    """The example job and its media in ``folder`` (paths in the job are relative to it)."""
    if not (folder / "media").exists():
        shutil.copytree(EXAMPLES / "media", folder / "media")
    return write_job(folder, EXAMPLES / example, **changes)


def art(folder: Path, name: str):
    return open_artifact(folder / "work" / name)


@pytest.fixture(scope="module")
def i2v(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("i2v")
    ltx2("run", str(job_copy(folder, "i2v.yaml")))
    return folder


def test_image_to_video_keeps_the_image_as_the_first_latent_frame(i2v):
    assert (i2v / "out.mp4").stat().st_size > 0
    for stage_out, image in (("stage1.zarr", "image-encode.s1.0.zarr"), ("latents.zarr", "image-encode.s2.0.zarr")):
        video, enc = art(i2v, stage_out).read_numpy("video"), art(i2v, image).read_numpy("video")
        assert enc.shape[2] == 1 and video.shape[3:] == enc.shape[3:]
        np.testing.assert_array_equal(video[:, :, :1], enc)  # mask 0 there: kept bit for bit
        assert not np.array_equal(video[:, :, 1:2], np.broadcast_to(enc, video[:, :, 1:2].shape))


def test_a_new_image_reruns_its_encodes_and_what_follows_only(i2v, tmp_path):
    shutil.copytree(i2v / "work", tmp_path / "work")
    job = job_copy(tmp_path, "i2v.yaml")
    ltx2("run", str(job))
    first = statuses(tmp_path)
    assert {k for k, v in first.items() if v != "reused"} <= {"export", "preview"}  # only the new output path
    shutil.copy(tmp_path / "media" / "last.png", tmp_path / "media" / "first.png")  # other content, same name
    ltx2("run", str(job))
    st = statuses(tmp_path)
    assert st["text-encode"] == "reused"
    assert {k for k, v in st.items() if v == "computed"} == {
        "image-encode.s1.0", "image-encode.s2.0", "denoise", "upscale", "refine", "decode", "vocode", "export",
        "preview"}  # the audio is generated with the video: it follows the new image too
    # a job elsewhere with the same file, under another name, reuses the encodings
    other = tmp_path / "other"
    other.mkdir()
    shutil.copytree(tmp_path / "media", other / "media")
    (other / "media" / "first.png").rename(other / "media" / "renamed.png")
    job2 = job_copy(other, "i2v.yaml", images=[{"path": "media/renamed.png", "frame": 0, "strength": 1.0}])
    ltx2("run", str(job2))
    st2 = statuses(other)
    assert st2["image-encode.s1.0"] == st2["image-encode.s2.0"] == "reused"


def test_keyframes_resume_mid_denoise_to_the_same_latents(tmp_path):
    """Appended keyframe tokens with strength below 1 change at every step: a run killed mid stage 1 and resumed
    continues them from its checkpoint and ends where an uninterrupted run does."""
    images = [{"path": "media/first.png", "frame": 0, "strength": 1.0, "mode": "keyframe"},
              {"path": "media/last.png", "frame": 16, "strength": 0.5, "mode": "keyframe"}]
    ref_dir, cut_dir = tmp_path / "ref", tmp_path / "cut"
    ref_dir.mkdir(), cut_dir.mkdir()
    ltx2("run", str(job_copy(ref_dir, "keyframes.yaml", images=images)))
    job = job_copy(cut_dir, "keyframes.yaml", images=images)
    store = tmp_path / "store-cut"
    env = {**os.environ, "LTX2_TEST_STEP_DELAY": "1.5", "LTX2_STORE": str(store)}
    proc = subprocess.Popen([sys.executable, "-m", "ltx2.cli.main", "run", str(job)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    step, deadline = 0, time.time() + 180
    while time.time() < deadline and step < 1:
        time.sleep(0.2)
        for partial in store.glob("*/*.zarr.partial"):
            try:
                attrs = json.loads((partial / "zarr.json").read_text())["attributes"]
            except (OSError, ValueError):
                continue
            if attrs.get("producer", {}).get("stage") == "denoise" and attrs.get("progress"):
                step = attrs["progress"]["step"]
    assert step >= 1, "stage 1 never checkpointed a step"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    r = subprocess.run([sys.executable, "-m", "ltx2.cli.main", "run", str(job)], env={**env, "LTX2_TEST_STEP_DELAY": "0"},
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "resumed at step" in r.stdout
    for name in ("stage1.zarr", "latents.zarr"):
        a, b = art(ref_dir, name), art(cut_dir, name)
        for arr in ("video", "audio"):
            np.testing.assert_array_equal(a.read_numpy(arr), b.read_numpy(arr))
    assert "video_appended" in art(cut_dir, "stage1.zarr").arrays


def test_audio_to_video_keeps_the_soundtrack(tmp_path):
    ltx2("run", str(job_copy(tmp_path, "a2v.yaml")))
    enc = art(tmp_path, "audio-encode.zarr").read_numpy("audio")
    for name in ("stage1.zarr", "latents.zarr"):  # frozen: mask 0 and sigma 0 in both stages
        np.testing.assert_array_equal(art(tmp_path, name).read_numpy("audio"), enc)
    st = statuses(tmp_path)
    assert "vocode" not in st and st["soundtrack"] == "computed"
    sound = art(tmp_path, "soundtrack.zarr")
    with wave.open(str(tmp_path / "media" / "voice.wav")) as f:  # the file's own samples (16-bit PCM)
        rate, channels = f.getframerate(), f.getnchannels()
        pcm = np.frombuffer(f.readframes(f.getnframes()), "<i2").reshape(-1, channels).T
    n = round(17 / 24 * rate)  # 17 frames at 24 fps
    assert sound.facts["sample_rate"] == rate and sound.read_numpy("waveform").shape == (channels, n)
    np.testing.assert_array_equal(sound.read_numpy("waveform"), pcm[:, :n].astype(np.float32) / 32768.0)
    with av.open(str(tmp_path / "out.mp4")) as f:
        assert f.streams.audio[0].rate == rate


def test_ic_lora_appends_the_reference_in_stage_one_only(tmp_path):
    ltx2("run", str(job_copy(tmp_path, "ic-lora.yaml")))
    ref = art(tmp_path, "video-encode.reference.zarr")
    lat = ref.read_numpy("video")
    assert lat.shape[3:] == (1, 2)  # stage 1 is 128x64; the LoRA's factor 2: a 64x32 reference
    assert ref.read_numpy("attention").shape == (1, lat.shape[2] * lat.shape[3] * lat.shape[4])
    s1 = art(tmp_path, "stage1.zarr")
    tokens = lat.transpose(0, 2, 3, 4, 1).reshape(1, -1, lat.shape[1])
    np.testing.assert_array_equal(s1.read_numpy("video_appended"), tokens)  # strength 1: kept exactly
    assert s1.params["loras"] == [1.0] and s1.params["conditioning"][0]["use"] == "reference"
    s2 = art(tmp_path, "latents.zarr")
    assert s2.params["loras"] == [] and s2.params["conditioning"] == [] and "video_appended" not in s2.arrays


def test_retake_regenerates_the_window_and_keeps_the_rest(tmp_path):
    ltx2("run", str(job_copy(tmp_path, "retake.yaml")))
    st = statuses(tmp_path)
    assert "upscale" not in st and "refine" not in st  # one stage at the source's size
    src_v = art(tmp_path, "video-encode.source.zarr").read_numpy("video")
    src_a = art(tmp_path, "audio-encode.source.zarr").read_numpy("audio")
    out = art(tmp_path, "stage1.zarr")
    v, a = out.read_numpy("video"), out.read_numpy("audio")
    # 25 frames, window 0.4-0.65 s: latent frame 2 (pixel frames 9-16) and audio latent frames 10-16
    keep_v, keep_a = [0, 1, 3], [i for i in range(a.shape[2]) if not 10 <= i <= 16]
    np.testing.assert_array_equal(v[:, :, keep_v], src_v[:, :, keep_v])
    np.testing.assert_array_equal(a[:, :, keep_a], src_a[:, :, keep_a])
    assert not np.allclose(v[:, :, 2], src_v[:, :, 2]) and not np.allclose(a[:, :, 10:17], src_a[:, :, 10:17])
