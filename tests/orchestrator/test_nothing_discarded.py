"""Nothing cached is discarded before its replacement is ready, and a run that cannot write touches nothing:
a forced stage that fails leaves the finished entry; a read-only work folder with every stage cached is
reported as done (or refused) without a write."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ltx2.artifacts_schema import open_artifact
from ltx2.orchestrator.execute import RunFailed, run_job
from ltx2.orchestrator.graph import plan_keys
from ltx2.orchestrator.job import load_job
from ltx2.orchestrator.planner import plan_job
from ltx2.orchestrator.store import entry_path, open_store

from fake_executor import FakeExecutor
from support import EXAMPLE, ltx2

pytestmark = pytest.mark.slow  # each reads a render


def tree(*roots: Path) -> dict[str, tuple]:
    out: dict[str, tuple] = {}
    for root in roots:
        for p in sorted([root, *root.rglob("*")] if root.is_dir() else [root]):
            if p.is_symlink():
                out[str(p)] = ("link", os.readlink(p))
            elif p.is_dir():
                out[str(p)] = ("dir", p.stat().st_mtime_ns)
            elif p.exists():
                out[str(p)] = ("file", hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
    return out


def finished_copy(rendered: Path, folder: Path) -> Path:
    """The example render's job with its own work folder, video and a copy of the store, everything reusable."""
    shutil.copytree(rendered / "store", folder / "store", symlinks=True)
    job = yaml.safe_load(EXAMPLE.read_text())
    job.update(output=str(folder / "out.mp4"), work_dir=str(folder / "work"), store=str(folder / "store"))
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    ltx2("run", str(path))  # export (its output path is part of its key) and preview; the rest is reused
    # the manifest names the job by its absolute path: how another job finds out whose work folder this is
    assert json.loads((folder / "work" / "manifest.json").read_text())["job"] == str(path.resolve())
    return path


def test_a_forced_stage_that_fails_leaves_the_finished_entry(example_render, tmp_path):
    job = load_job(finished_copy(example_render, tmp_path))
    stages = plan_job(job).stages
    decode = next(st for st in stages if st.name == "decode")
    entry = entry_path(open_store(job), decode, plan_keys(stages)["decode"])
    before = tree(entry)
    with pytest.raises(RunFailed) as info:
        run_job(job, "job", {"decode"}, executor=FakeExecutor(codes={"decode": 1}))  # the recompute breaks
    assert info.value.stage == "decode"
    assert tree(entry) == before  # the finished frames are still there, untouched
    open_artifact(entry).verify()
    assert (tmp_path / "work" / "frames.zarr").resolve() == entry.resolve()


@contextlib.contextmanager
def read_only(folder: Path):
    """``folder`` read-only for this process: by its mode (not root), else as a read-only bind mount (root
    passes any mode); skips where neither can be had."""
    if os.geteuid() != 0:
        mode = folder.stat().st_mode
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(mode)
        return
    r = subprocess.run(["mount", "--bind", "-o", "ro", str(folder), str(folder)], capture_output=True)
    if r.returncode != 0 or os.access(folder, os.W_OK):
        if r.returncode == 0:
            subprocess.run(["umount", str(folder)], check=True)
        pytest.skip(f"cannot make {folder} read-only here ({r.stderr.decode().strip()})")
    try:
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_read_only_work_dir_with_every_stage_cached(example_render, tmp_path):
    job = finished_copy(example_render, tmp_path)
    work, store = tmp_path / "work", tmp_path / "store"
    outputs = [tmp_path / n for n in ("out.mp4", "out.mp4.ltx2.json", "out.preview.png", "out.preview.png.ltx2.json")]
    before = tree(work, store, *outputs)
    with read_only(work):
        r = ltx2("run", str(job))
        out = " ".join(r.stdout.split())
        assert f"{tmp_path / 'out.mp4'} is already there, made by this job (every stage cached)" in out, out
        assert f"work_dir: '{work}' is not writable" in out
        assert tree(work, store, *outputs) == before  # not a lock, link or manifest written
        # the video gone: it would have to be made, which needs the work folder: refused before anything
        for p in outputs:
            p.unlink()
        r = ltx2("run", str(job), check=False)
        out = " ".join((r.stdout + r.stderr).split())
        assert r.returncode == 2 and "Traceback" not in out, out
        assert f"error: work_dir: '{work}' is not writable; make it writable, or give another work_dir" in out
        assert tree(work, store) == {k: v for k, v in before.items() if Path(k) not in outputs}
        assert not any(p.exists() for p in outputs)
