"""The content-addressed store: reuse across seeds and jobs, the work folder's links, the store's place, gc."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ltx2.artifacts_schema import ArtifactLock
from ltx2.artifacts_schema.content_store import ContentStore
from ltx2.models.tiny import ensure_tiny_model
from ltx2.orchestrator.execute import run_job
from ltx2.orchestrator.gc import GcError, collect
from ltx2.orchestrator.job import JobError, load_job, parse_job
from ltx2.orchestrator.store import store_root

from fake_executor import StageWritingExecutor
from support import ltx2, statuses, write_job


def manifest(folder: Path) -> dict:
    return json.loads((folder / "work" / "manifest.json").read_text())


# ----------------------------------------------------------------------------- reuse across runs (renders)

@pytest.mark.slow
def test_seed_a_then_b_then_a_reruns_nothing_the_third_time(tmp_path) -> None:
    job = write_job(tmp_path, seed=1)
    ltx2("run", str(job))
    first = (tmp_path / "out.mp4").read_bytes()
    keys_a = manifest(tmp_path)["keys"]
    write_job(tmp_path, seed=2)
    ltx2("run", str(job))
    assert statuses(tmp_path)["text-encode"] == "reused" and statuses(tmp_path)["denoise"] == "computed"
    assert (tmp_path / "out.mp4").read_bytes() != first
    write_job(tmp_path, seed=1)
    r = ltx2("run", str(job))
    assert set(statuses(tmp_path).values()) == {"reused"}, statuses(tmp_path)  # export included
    assert "8 of 8 stages reused" in " ".join(r.stdout.split())
    assert manifest(tmp_path)["keys"] == keys_a
    assert (tmp_path / "out.mp4").read_bytes() == first
    # the work folder's names point at seed 1's artifacts again
    store = Path(os.environ["LTX2_STORE"])
    assert (tmp_path / "work" / "latents.zarr").resolve() == store / keys_a["refine"][:2] / f"{keys_a['refine']}.zarr"


@pytest.mark.slow
def test_two_jobs_with_one_prompt_share_the_text_encoding(tmp_path) -> None:
    ltx2("run", str(write_job(tmp_path / "one", seed=1)))
    ltx2("run", str(write_job(tmp_path / "two", seed=2)))
    one, two = statuses(tmp_path / "one"), statuses(tmp_path / "two")
    assert set(one.values()) == {"computed"}
    assert two.pop("text-encode") == "reused" and set(two.values()) == {"computed"}
    a, b = ((f / "work" / "text.zarr").resolve() for f in (tmp_path / "one", tmp_path / "two"))
    assert a == b and a.parent.parent == Path(os.environ["LTX2_STORE"])  # one entry, two links


# ----------------------------------------------------------------------------- where the store is

def test_the_store_is_the_jobs_else_the_environments_else_the_cache(tmp_path, monkeypatch) -> None:
    data = {"prompt": "a fox", "store": "shared/store"}
    assert store_root(parse_job(data, base_dir=tmp_path)) == tmp_path / "shared" / "store"  # beside the job file
    monkeypatch.setenv("LTX2_STORE", str(tmp_path / "env"))
    assert store_root(parse_job({"prompt": "a fox"}, base_dir=tmp_path)) == tmp_path / "env"
    monkeypatch.delenv("LTX2_STORE")
    assert store_root(parse_job({"prompt": "a fox"}, base_dir=tmp_path)) == (Path.home() / ".cache/ltx2/store").resolve()


def test_a_store_that_is_a_file_is_refused(tmp_path) -> None:
    (tmp_path / "store").write_text("not a folder")
    with pytest.raises(JobError, match="store"):
        parse_job({"prompt": "a fox", "store": "store"}, base_dir=tmp_path)


def test_entries_are_named_by_their_key(tmp_path) -> None:
    s = ContentStore(tmp_path)
    key = "ab" + "0" * 62
    assert s.entry(key) == tmp_path / "ab" / f"{key}.zarr" and s.entry(key, ".mp4").suffix == ".mp4"
    for bad in ("../../etc", "AB" + "0" * 62, "ab"):
        with pytest.raises(ValueError):
            s.entry(bad)


# ----------------------------------------------------------------------------- gc

def key(n: int) -> str:
    return f"{n:02x}" * 32


def fake_store(tmp_path: Path) -> tuple[ContentStore, Path, dict[str, list[Path]]]:
    """A store with entries for keys 1..6 and two registered work folders: a live one whose manifest names
    key 1 (planned) and key 2 (run), and one that no longer exists."""
    store = ContentStore(tmp_path / "store")
    files: dict[str, list[Path]] = {}

    def put(k: str, *names: str) -> None:
        for name in names:
            p = store.root / k[:2] / f"{k}{name}"
            p.parent.mkdir(parents=True, exist_ok=True)
            if name.endswith((".zarr", ".partial")):
                (p / "c").mkdir(parents=True)
                (p / "c" / "0").write_bytes(b"x" * 1000)
            else:
                p.write_bytes(b"y" * 100)
            files.setdefault(k, []).append(p)

    put(key(1), ".zarr")
    put(key(2), ".mp4", ".mp4.ltx2.json")
    put(key(3), ".zarr", ".zarr.partial")  # unreferenced: finished and a stale partial
    put(key(4), ".mp4", ".mp4.ltx2.json")  # unreferenced video
    put(key(5), ".zarr.partial")  # unreferenced partial alone
    put(key(6), ".zarr")  # unreferenced, but a running stage holds its lock
    work = tmp_path / "work"
    work.mkdir()
    (work / "manifest.json").write_text(json.dumps({"keys": {"text-encode": key(1)},
                                                    "stages": [{"name": "export", "key": key(2)}]}))
    store.register(work)
    store.register(tmp_path / "gone")
    return store, work, files


def test_gc_dry_run_lists_what_it_would_remove_and_removes_nothing(tmp_path) -> None:
    store, _, files = fake_store(tmp_path)
    before = sorted(p for p in store.root.rglob("*"))
    r = ltx2("gc", "--store", str(store.root), "--dry-run")
    out = r.stdout.replace("\n", " ")
    for k in (key(3), key(4), key(5), key(6)):
        assert k in out
    assert key(1) not in out and key(2) not in out
    assert "would remove 4 entries" in out and "would forget" in out and str(tmp_path / "gone") in out
    assert sorted(p for p in store.root.rglob("*")) == before


def test_gc_removes_unreferenced_entries_and_keeps_referenced_and_locked_ones(tmp_path) -> None:
    store, work, files = fake_store(tmp_path)
    with ArtifactLock(files[key(6)][0]):  # a stage writing key 6 right now
        report = collect(store)
    assert sorted(i.key for i, _ in report.removed) == [key(3), key(4), key(5)]
    assert report.bytes == 1000 + 1000 + 200 + 1000
    assert [i.key for i in report.in_use] == [key(6)] and report.kept == 2
    assert report.dropped_refs == [(tmp_path / "gone").resolve()]
    for k in (key(3), key(4), key(5)):
        assert not any(p.exists() for p in files[k])
    for k in (key(1), key(2), key(6)):
        assert all(p.exists() for p in files[k])
    assert [w for _, w in store.refs()] == [work.resolve()]  # the gone folder is forgotten
    assert [i.key for i, _ in collect(store).removed] == [key(6)]  # its stage has ended
    assert collect(store).removed == []
    # once nothing references them any more, the rest go too
    (work / "manifest.json").unlink()
    assert sorted(i.key for i, _ in collect(store).removed) == [key(1), key(2)]
    assert not any(p.exists() for k in (key(1), key(2)) for p in files[k])


def test_gc_refuses_when_a_manifest_cannot_be_read(tmp_path) -> None:
    store, work, files = fake_store(tmp_path)
    (work / "manifest.json").write_text("{not json")
    with pytest.raises(GcError, match="manifest.json"):
        collect(store)
    assert all(p.exists() for ps in files.values() for p in ps)
    r = ltx2("gc", "--store", str(store.root), check=False)
    assert r.returncode == 2 and "manifest.json" in r.stdout


def test_a_run_registers_its_work_folder_and_lists_its_keys(tmp_path) -> None:
    """Through a fake executor (no render): what gc relies on is written before anything runs."""
    ensure_tiny_model()
    job = load_job(write_job(tmp_path))
    m = run_job(job, "job", executor=StageWritingExecutor())
    store = ContentStore(os.environ["LTX2_STORE"])
    assert [w for _, w in store.refs()] == [(tmp_path / "work").resolve()]
    report = collect(store, dry_run=True)
    assert report.removed == [] and report.kept == len(m.stages) == 8
