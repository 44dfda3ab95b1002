"""The staged pipeline end to end on the embedded tiny model: run, cache, resume, bad artifacts, locks.

One full render (the session fixture example_render, tests/conftest.py) is shared; each test copies its work
folder when it changes things.
"""

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

from support import EXAMPLE, ltx2, statuses, write_job

pytestmark = pytest.mark.slow  # every test here renders, or reads a render


@pytest.fixture(scope="module")
def rendered(example_render) -> Path:
    return example_render  # write_job(folder) run by `ltx2 run`, once per session (tests/conftest.py)


def clone(src: Path, dst: Path, **changes) -> Path:
    shutil.copytree(src / "work", dst / "work")
    for name in ("out.mp4", "out.preview.png"):  # each file output with its record
        if (src / name).exists():
            shutil.copy2(src / name, dst / name)
            shutil.copy2(src / f"{name}.ltx2.json", dst / f"{name}.ltx2.json")
    return write_job(dst, **changes)


def test_full_run_writes_a_playable_mp4(rendered):
    job = yaml.safe_load(EXAMPLE.read_text())
    with av.open(str(rendered / "out.mp4")) as c:
        kinds = sorted(s.type for s in c.streams)
        assert kinds == ["audio", "video"]
        v, a = c.streams.video[0], c.streams.audio[0]
        assert v.codec_context.name == "h264" and a.codec_context.name == "aac"
        assert (v.codec_context.width, v.codec_context.height) == (job["width"], job["height"])
        assert float(v.average_rate) == pytest.approx(job["fps"])
        assert a.rate == 24000
        assert sum(1 for _ in c.decode(video=0)) == job["frames"]
    assert set(statuses(rendered).values()) == {"computed"}


def test_second_run_reuses_everything(rendered):
    ltx2("run", str(rendered / "job.yaml"))
    assert set(statuses(rendered).values()) == {"reused"}


def test_new_output_path_reruns_export_only(rendered, tmp_path):
    job = clone(rendered, tmp_path)  # same job, its video written elsewhere
    ltx2("run", str(job))
    st = statuses(tmp_path)
    assert st.pop("export") == "computed" and set(st.values()) == {"reused"}


@pytest.mark.parametrize("changes,rerun", [
    ({"seed": 43}, {"denoise", "upscale", "refine", "decode", "vocode", "export", "preview"}),
    ({"tiling": {"spatial_tile": 128, "spatial_overlap": 64}}, {"decode", "export", "preview"}),
    ({"crf": 30}, {"export"}),
])
def test_edits_rerun_only_what_changed(rendered, tmp_path, changes, rerun):
    job = clone(rendered, tmp_path, **changes)
    ltx2("run", str(job))
    st = statuses(tmp_path)
    assert {n for n, s in st.items() if s == "computed"} == rerun
    assert {n for n, s in st.items() if s == "reused"} == set(st) - rerun


def test_force_reruns_a_stage_and_its_dependents(rendered, tmp_path):
    job = clone(rendered, tmp_path)
    ltx2("run", str(job), "--force", "vocode")
    st = statuses(tmp_path)
    assert {n for n, s in st.items() if s == "computed"} == {"vocode", "export", "preview"}


def test_killed_denoise_resumes_to_identical_latents(rendered, tmp_path):
    """kill -9 in the middle of stage 1, run again: the result equals the uninterrupted render's."""
    job = clone(rendered, tmp_path)
    work = tmp_path / "work"
    for name in ("stage1.zarr", "upscaled.zarr", "latents.zarr", "frames.zarr", "audio.zarr"):
        shutil.rmtree(work / name)
    (tmp_path / "out.mp4").unlink()
    env = {**os.environ, "LTX2_TEST_STEP_DELAY": "1.5"}
    proc = subprocess.Popen([sys.executable, "-m", "ltx2.cli.main", "run", str(job)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    store = Path(os.environ["LTX2_STORE"])  # this test's own store: stage 1's partial is the only one in it
    partial = None
    deadline = time.time() + 120
    step = 0
    while time.time() < deadline and step < 1:
        time.sleep(0.2)
        partial = next(iter(store.glob("*/*.zarr.partial")), None)
        attrs = partial / "zarr.json" if partial is not None else None
        if attrs is not None and attrs.exists():
            try:
                prog = json.loads(attrs.read_text())["attributes"].get("progress")
                step = prog["step"] if prog else 0
            except (ValueError, KeyError):
                pass
    assert step >= 1, "stage 1 never checkpointed a step"
    os.killpg(proc.pid, signal.SIGKILL)  # the run, mid-step; its stage process must die with it
    proc.wait()
    progress_file = partial / "zarr.json"
    before = progress_file.read_bytes()
    time.sleep(3.5)  # more than a (slowed) step: an orphaned stage would have checkpointed again
    assert progress_file.read_bytes() == before, "the stage outlived the killed run"
    assert partial.exists() and not (work / "stage1.zarr").exists()
    r = ltx2("run", str(job))
    assert "resumed at step" in r.stdout
    for name in ("stage1.zarr", "latents.zarr"):
        a, b = open_artifact(rendered / "work" / name), open_artifact(work / name)
        for arr in ("video", "audio"):
            np.testing.assert_array_equal(a.read_numpy(arr), b.read_numpy(arr))


def test_corrupted_cached_artifact_is_recomputed(rendered, tmp_path):
    job = clone(rendered, tmp_path)
    chunk = next(p for p in sorted((tmp_path / "work" / "audio.zarr" / "waveform" / "c").rglob("*")) if p.is_file())
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    chunk.write_bytes(bytes(raw))
    assert ltx2("inspect", str(tmp_path / "work" / "audio.zarr"), check=False).returncode == 1
    ltx2("run", str(job))
    st = statuses(tmp_path)
    assert st["vocode"] == "computed" and st["decode"] == "reused"
    open_artifact(tmp_path / "work" / "audio.zarr", verify=True)


def test_partial_artifact_is_refused_by_a_stage(rendered, tmp_path):
    src = rendered / "work" / "latents.zarr"
    partial = tmp_path / "latents.zarr.partial"
    shutil.copytree(src, partial)
    r = ltx2("stage", "decode", "--in", str(partial), "--out", str(tmp_path / "f.zarr"), check=False)
    assert r.returncode == 2
    assert "partial" in r.stderr


def test_stages_run_by_hand(rendered, tmp_path):
    work = rendered / "work"
    r = ltx2("stage", "vocode", "--in", str(work / "latents.zarr"), "--out", str(tmp_path / "audio.zarr"))
    a = open_artifact(tmp_path / "audio.zarr", "audio", verify=True)
    ref = open_artifact(work / "audio.zarr")
    np.testing.assert_array_equal(a.read_numpy("waveform"), ref.read_numpy("waveform"))
    assert a.cache_key == ref.cache_key  # by hand, the same key the orchestrator computed
    ltx2("stage", "export", "--in", str(work / "frames.zarr"), "--in", str(tmp_path / "audio.zarr"),
         "--out", str(tmp_path / "x.mp4"))
    with av.open(str(tmp_path / "x.mp4")) as c:
        assert len(c.streams.video) == 1 and len(c.streams.audio) == 1
    r = ltx2("stage", "decode", "--in", str(work / "text.zarr"), "--out", str(tmp_path / "f.zarr"), check=False)
    assert r.returncode == 2 and "text artifact" in r.stderr and "latents" in r.stderr


def test_stage_refuses_a_budget_it_cannot_fit(rendered, tmp_path):
    r = ltx2("stage", "decode", "--in", str(rendered / "work" / "latents.zarr"), "--out", str(tmp_path / "f.zarr"),
             "--budget", "1MB", check=False)
    assert r.returncode == 75
    assert "budget" in r.stderr
    assert not (tmp_path / "f.zarr").exists()


def test_plan_shows_cached_and_pending(rendered, tmp_path):
    job = clone(rendered, tmp_path, seed=5)
    out = ltx2("plan", str(job)).stdout
    assert "cached" in out and "will run" in out
    assert "7 of 8 stages will run" in out


def test_concurrent_runs_do_not_corrupt(tmp_path):
    job = write_job(tmp_path)
    procs = [subprocess.Popen([sys.executable, "-m", "ltx2.cli.main", "run", str(job)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    for name in ("text.zarr", "stage1.zarr", "latents.zarr", "frames.zarr", "audio.zarr"):
        open_artifact(tmp_path / "work" / name, verify=True)
    with av.open(str(tmp_path / "out.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 9


def test_watchdog_ends_a_stage_over_its_budget(rendered, tmp_path):
    """The parent's RSS watch, independent of the stage's own pre-load check (no --budget passed)."""
    from ltx2.orchestrator.runner import run_stage

    run = run_stage("decode", ["--in", str(rendered / "work" / "latents.zarr"), "--out", str(tmp_path / "f.zarr")],
                    tmp_path / "decode.log", budget_bytes=40 << 20)
    assert run.killed_for_memory and run.returncode < 0
    assert run.message.startswith("decode was killed at") and "over its 40 MB budget" in run.message
    assert not (tmp_path / "f.zarr").exists()
