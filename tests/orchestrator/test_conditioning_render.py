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
from pathlib import Path

import av
import numpy as np
import pytest
import yaml

from ltx2.artifacts_schema import open_artifact

from support import ROOT, ltx2

pytestmark = pytest.mark.slow  # every test here renders

EXAMPLES = ROOT / "examples"


def job_copy(folder: Path, example: str, **changes) -> Path:
    """The example job and its media in ``folder`` (paths in the job are relative to it)."""
    if not (folder / "media").exists():
        shutil.copytree(EXAMPLES / "media", folder / "media")
    job = yaml.safe_load((EXAMPLES / example).read_text())
    job.update(output=str(folder / "out.mp4"), work_dir=str(folder / "work"), **changes)
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def statuses(folder: Path) -> dict[str, str]:
    m = json.loads((folder / "work" / "manifest.json").read_text())
    return {s["name"]: s["status"] for s in m["stages"]}


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
