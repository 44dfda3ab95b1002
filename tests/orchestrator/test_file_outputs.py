"""The job's file outputs (the video, the preview) checked before reuse: a damaged copy at the job's output is
delivered again from the store, a damaged store entry is made again. Through a fake executor: no render."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from ltx2.orchestrator.execute import run_job
from ltx2.orchestrator.job import load_job

from fake_executor import StageWritingExecutor
from support import EXAMPLE


@pytest.fixture
def job(tmp_path):
    data = yaml.safe_load(EXAMPLE.read_text())
    data.update(output=str(tmp_path / "out.mp4"), work_dir=str(tmp_path / "work"))
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(data))
    return load_job(tmp_path / "job.yaml")


def run(job) -> tuple[dict[str, str], list[str]]:
    """(stage -> status, the stages the executor ran)."""
    ex = StageWritingExecutor()
    m = run_job(job, "job", executor=ex)
    return {s.name: s.status for s in m.stages}, [i.stage for i in ex.invocations]


def entry(job, stage: str) -> Path:
    m = json.loads((Path(job.work_dir) / "manifest.json").read_text())
    key = m["keys"][stage]
    return Path(os.environ["LTX2_STORE"]) / key[:2] / f"{key}{Path(job.output).suffix if stage == 'export' else '.png'}"


def test_an_output_replaced_by_a_damaged_file_is_delivered_again(job, tmp_path):
    run(job)
    out = tmp_path / "out.mp4"
    made = out.read_bytes()
    out.unlink()
    out.write_bytes(made[:5])  # a new file at the output: the store's entry is intact
    status, ran = run(job)
    assert status["export"] == "reused" and "export" not in ran
    assert out.read_bytes() == made == entry(job, "export").read_bytes()


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_an_output_damaged_in_place_is_made_again(job, tmp_path, damage):
    """The output is a hard link to the store entry: damage in place reaches the entry too, so it is not reused."""
    run(job)
    out = tmp_path / "out.mp4"
    made = out.read_bytes()
    assert os.path.samefile(out, entry(job, "export"))
    with open(out, "r+b") as f:
        if damage == "truncate":
            f.truncate(5)
        else:
            f.seek(3)
            f.write(bytes([made[3] ^ 0xFF]))
    status, ran = run(job)
    assert status["export"] == "computed" and "export" in ran
    assert out.read_bytes() == made


def test_a_damaged_output_is_not_brought_into_a_new_store(job, tmp_path, monkeypatch):
    """A finished work folder and output, run against an empty store: an intact output is brought in, a damaged
    one is made again."""
    run(job)
    out = tmp_path / "out.mp4"
    made = out.read_bytes()
    for p in (out, tmp_path / "out.preview.png"):  # copies of their own, as if from another machine
        data = p.read_bytes()
        p.unlink()
        p.write_bytes(data)
    with open(out, "r+b") as f:
        f.truncate(5)
    monkeypatch.setenv("LTX2_STORE", str(tmp_path / "new-store"))
    status, ran = run(job)
    assert status["export"] == "computed" and status["preview"] == "reused" and "preview" not in ran
    assert out.read_bytes() == made
