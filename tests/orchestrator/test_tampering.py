"""Tampered or damaged results found by `ltx2 run` and made again, never reused: an artifact's attribute changed
after it was written, an artifact of an older schema, a video damaged after export (end to end, tiny model)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import av
import pytest
import yaml

from ltx2.artifacts_schema import SCHEMA_VERSION, open_artifact
from ltx2.stages.base import file_cached

from support import EXAMPLE, ltx2, statuses

pytestmark = pytest.mark.slow  # every test here renders, or reads a render


def clone(src: Path, dst: Path) -> Path:
    """The example render's work folder, video and preview (with their records), under a job of its own."""
    shutil.copytree(src / "work", dst / "work")
    for name in ("out.mp4", "out.preview.png"):
        shutil.copy2(src / name, dst / name)
        shutil.copy2(src / f"{name}.ltx2.json", dst / f"{name}.ltx2.json")
    job = yaml.safe_load(EXAMPLE.read_text())
    job.update(output=str(dst / "out.mp4"), work_dir=str(dst / "work"))
    (dst / "job.yaml").write_text(yaml.safe_dump(job))
    return dst / "job.yaml"


def edit_attrs(artifact: Path, edit) -> None:
    meta = artifact / "zarr.json"
    doc = json.loads(meta.read_text())
    edit(doc["attributes"])
    meta.write_text(json.dumps(doc))


def settle(job: Path) -> None:
    """Run the cloned job once: its artifacts are brought into this test's store (work/*.zarr now link into it)
    and the video is exported at its new path (the output path is part of export's key)."""
    ltx2("run", str(job))
    st = statuses(job.parent)
    assert st.pop("export") == "computed" and set(st.values()) == {"reused"}, st


def video_fps(path: Path) -> float:
    with av.open(str(path)) as c:
        return float(c.streams.video[0].average_rate)


def test_a_tampered_fps_is_recomputed_not_reused(example_render, tmp_path):
    job = clone(example_render, tmp_path)
    settle(job)
    latents = tmp_path / "work" / "latents.zarr"
    assert latents.is_symlink()
    fps = open_artifact(latents).facts["fps"]
    edit_attrs(latents.resolve(), lambda a: a["facts"].update(fps=fps / 2))  # the store's entry itself
    r = ltx2("inspect", str(latents), check=False)
    assert r.returncode == 1 and "hashes: verified" not in r.stdout and "attributes" in r.stdout, r.stdout
    ltx2("run", str(job), "--force", "decode")  # decode reads the latents' fps and hands it on to the video
    st = statuses(tmp_path)
    assert st["refine"] == "computed", st  # the tampered latents were made again, not reused
    assert {n for n, s in st.items() if s == "computed"} == {"refine", "decode", "export", "preview"}, st
    art = open_artifact(latents, "latents", verify=True)
    assert art.facts["fps"] == fps
    assert video_fps(tmp_path / "out.mp4") == pytest.approx(fps) == pytest.approx(video_fps(example_render / "out.mp4"))
    ref = open_artifact(example_render / "work" / "frames.zarr")
    assert (open_artifact(tmp_path / "work" / "frames.zarr").read_numpy("video") == ref.read_numpy("video")).all()


def test_an_artifact_of_the_previous_schema_is_recomputed(example_render, tmp_path):
    """What an older build left in a work folder (schema 1, no attrs hash): made again with this schema."""
    job = clone(example_render, tmp_path)
    text = tmp_path / "work" / "text.zarr"
    assert not text.is_symlink()
    edit_attrs(text, lambda a: (a.update(schema_version=1), a.pop("attrs_sha256", None)))
    r = ltx2("inspect", str(text), check=False)
    assert r.returncode == 1 and "unknown schema version 1" in " ".join(r.stdout.split())
    ltx2("run", str(job))
    st = statuses(tmp_path)
    assert st.pop("text-encode") == "computed" and st.pop("export") == "computed", st  # export: its new path
    assert set(st.values()) == {"reused"}, st
    assert open_artifact(text, "text", verify=True).schema_version == SCHEMA_VERSION


def test_a_damaged_video_is_delivered_again_or_made_again(example_render, tmp_path):
    job = clone(example_render, tmp_path)
    settle(job)
    out = tmp_path / "out.mp4"
    made = out.read_bytes()

    # a new file at the output (the store's copy intact): delivered again from the store, export not run
    out.unlink()
    out.write_bytes(made[: len(made) // 2])
    ltx2("run", str(job))
    assert statuses(tmp_path)["export"] == "reused" and out.read_bytes() == made

    # truncated in place: the output is a hard link to the store's entry, so the entry is damaged too
    store = Path(os.environ["LTX2_STORE"])
    key = json.loads((tmp_path / "work" / "manifest.json").read_text())["keys"]["export"]
    entry = store / key[:2] / f"{key}.mp4"
    assert os.path.samefile(out, entry)
    with open(out, "r+b") as f:
        f.truncate(len(made) // 2)
    assert not file_cached(entry, key)[0]
    ltx2("run", str(job))
    st = statuses(tmp_path)
    assert st.pop("export") == "computed" and set(st.values()) == {"reused"}, st
    assert file_cached(out, key)[0] and file_cached(entry, key)[0]
    with av.open(str(out)) as c:
        assert sum(1 for _ in c.decode(video=0)) == yaml.safe_load(EXAMPLE.read_text())["frames"]
