"""Tampered artifacts: attributes covered by a hash, array records that point outside the artifact."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ltx2.artifacts_schema import SCHEMA_VERSION, ArtifactError, ArtifactWriter, Producer, open_artifact, summarize
from ltx2.cli.main import app

PRODUCER = Producer("decode", "1")
FACTS = {"frame_count": 4, "height": 8, "width": 8, "fps": 24.0}


def frames(path: Path, seed: int = 0, **kw) -> Path:
    w = ArtifactWriter(path, "frames", producer=PRODUCER, cache_key=kw.pop("cache_key", "k-frames"),
                       input_keys={"latents": "k-latents"}, params={"tile": 16}, **kw)
    w.write_array("video", np.random.default_rng(seed).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8))
    return w.finalize(dict(FACTS))


def doc(path: Path) -> dict:
    return json.loads((path / "zarr.json").read_text())


def write_doc(path: Path, d: dict) -> None:
    (path / "zarr.json").write_text(json.dumps(d))


def attrs_sha256(attrs: dict) -> str:
    """The documented definition (artifacts_schema/hashing.py), written out independently: sha256 of the
    attributes other than ``attrs_sha256`` as JSON with sorted keys and no whitespace."""
    rest = {k: v for k, v in attrs.items() if k != "attrs_sha256"}
    text = json.dumps(rest, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def tamper(path: Path, reseal: bool = False, **changes) -> None:
    """Change group attributes (dotted names reach inside dicts); ``reseal`` records the matching attrs hash,
    as a writer with a bug (or a careful forger) would, so only the other checks stand in the way."""
    d = doc(path)
    for name, value in changes.items():
        *outer, last = name.split("__")
        target = d["attributes"]
        for part in outer:
            target = target[part]
        target[last] = value
    if reseal:
        d["attributes"]["attrs_sha256"] = attrs_sha256(d["attributes"])
    write_doc(path, d)


def test_the_attrs_hash_follows_its_documented_definition(tmp_path):
    path = frames(tmp_path / "f.zarr")
    attrs = doc(path)["attributes"]
    assert attrs["attrs_sha256"] == attrs_sha256(attrs)
    assert attrs["schema_version"] == SCHEMA_VERSION == 2


@pytest.mark.parametrize("change", [
    {"facts__fps": 12.0},                       # the one the issue found: changes the video's speed
    {"facts__fps": 24},                         # same number, another JSON type: not what was written
    {"params__tile": 32},
    {"producer__version": "2"},
    {"input_keys__latents": "k-other"},
    {"cache_key": "k-other"},
    {"arrays__video__chunk_sha256": []},
])
def test_a_changed_attribute_is_corrupt_not_reused(tmp_path, change):
    path = frames(tmp_path / "f.zarr")
    tamper(path, **change)
    with pytest.raises(ArtifactError) as e:
        open_artifact(path, "frames")
    assert e.value.reason == "hash_mismatch", e.value
    assert "attributes" in e.value.problem and "corrupt" in e.value.problem
    assert "delete it and run again" in str(e.value)
    s = summarize(path)
    assert s.state == "invalid" and s.hashes.startswith("mismatch") and "attributes" in s.problem


def test_inspect_refuses_a_tampered_fact(tmp_path):
    path = frames(tmp_path / "f.zarr")
    ok = CliRunner().invoke(app, ["inspect", str(path)], terminal_width=200)
    assert ok.exit_code == 0 and "hashes: verified" in ok.output, ok.output
    tamper(path, facts__fps=12.0)
    r = CliRunner().invoke(app, ["inspect", str(path)], terminal_width=200)
    out = " ".join(r.output.split())
    assert r.exit_code == 1, out
    assert "hashes: verified" not in out and "hashes: mismatch" in out and "attributes" in out


def test_missing_attrs_hash_is_refused(tmp_path):
    path = frames(tmp_path / "f.zarr")
    d = doc(path)
    del d["attributes"]["attrs_sha256"]
    write_doc(path, d)
    with pytest.raises(ArtifactError, match="attrs_sha256") as e:
        open_artifact(path)
    assert e.value.reason == "hash_mismatch"


def test_an_artifact_of_the_previous_schema_is_refused_by_its_version(tmp_path):
    """What an older build wrote (schema 1, no attrs hash): refused as another schema version, so a run
    recomputes it (tests/orchestrator/test_tampering.py runs that)."""
    path = frames(tmp_path / "f.zarr")
    d = doc(path)
    d["attributes"]["schema_version"] = 1
    del d["attributes"]["attrs_sha256"]
    write_doc(path, d)
    with pytest.raises(ArtifactError) as e:
        open_artifact(path, "frames")
    assert e.value.reason == "schema_version"
    assert f"unknown schema version 1 (this build reads {SCHEMA_VERSION})" in str(e.value)


def test_a_resumed_writer_rehashes_the_attributes(tmp_path):
    """A finished partial whose rename was cut off, renamed by a resumed writer: still sealed."""
    path = frames(tmp_path / "f.zarr")
    path.rename(tmp_path / "f.zarr.partial")
    w = ArtifactWriter(path, "frames", producer=PRODUCER, cache_key="k-frames", input_keys={"latents": "k-latents"},
                       params={"tile": 16}, resume=True)
    assert w.complete
    w.finalize()
    open_artifact(path, "frames", verify=True)


# ---- array records that point outside the artifact ----------------------------------------------

@pytest.mark.parametrize("location", ["../a.zarr/video", "/abs/video", "video/../../a.zarr/video", "./video/.."])
def test_an_array_location_outside_the_artifact_is_refused(tmp_path, location):
    a = frames(tmp_path / "a.zarr", seed=1)
    b = frames(tmp_path / "b.zarr", seed=2, cache_key="k-b")
    rec = doc(a)["attributes"]["arrays"]["video"]  # a's hashes: b would read a's bytes and find them intact
    tamper(b, reseal=True, arrays__video={**rec, "location": location})
    with pytest.raises(ArtifactError) as e:
        open_artifact(b, "frames").read_numpy("video")
    assert e.value.reason == "invalid" and "outside the artifact" in e.value.problem, e.value
    assert repr(location) in e.value.problem


def test_an_array_name_that_is_a_path_is_refused(tmp_path):
    a = frames(tmp_path / "a.zarr", seed=1)
    b = frames(tmp_path / "b.zarr", seed=2, cache_key="k-b")
    rec = doc(a)["attributes"]["arrays"]["video"]
    arrays = {"../a.zarr/video": rec}
    tamper(b, reseal=True, arrays=arrays)
    with pytest.raises(ArtifactError, match="outside the artifact") as e:
        open_artifact(b)
    assert e.value.reason == "invalid"


def test_an_array_folder_linked_outside_the_artifact_is_refused(tmp_path):
    a = frames(tmp_path / "a.zarr", seed=1)
    b = frames(tmp_path / "b.zarr", seed=2, cache_key="k-b")
    tamper(b, reseal=True, arrays=doc(a)["attributes"]["arrays"])
    shutil.rmtree(b / "video")
    (b / "video").symlink_to(a / "video")
    with pytest.raises(ArtifactError, match="outside the artifact") as e:
        open_artifact(b, "frames")
    assert e.value.reason == "invalid"


def test_an_artifact_reached_through_a_link_is_still_read(tmp_path):
    """work/NAME.zarr is a symlink into the store: the artifact itself may be linked, its arrays stay inside."""
    a = frames(tmp_path / "store" / "a.zarr", seed=1)
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "a.zarr").symlink_to(a)
    assert open_artifact(tmp_path / "work" / "a.zarr", "frames", verify=True).read_numpy("video").shape == (4, 8, 8, 3)


def test_a_partial_whose_progress_points_outside_is_not_resumed(tmp_path):
    """Partials carry no attrs hash (they change every step): their records are checked for escapes instead."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    path = tmp_path / "l.zarr"
    w = ArtifactWriter(path, "latents", producer=Producer("denoise", "1"), cache_key="k", resume=True)
    w.checkpoint(1, arrays={"video": np.zeros((1, 4, 3, 2, 2), np.float32),
                            "audio": np.zeros((1, 8, 4, 16), np.float32)}, facts={"sigma": 0.5, "step": 1})
    d = doc(w.partial)
    d["attributes"]["progress"]["snapshot"]["video"]["location"] = "../outside"
    write_doc(w.partial, d)
    again = ArtifactWriter(path, "latents", producer=Producer("denoise", "1"), cache_key="k", resume=True)
    assert not again.resumed and "outside the artifact" in again.discarded
    assert (outside / "keep.txt").read_text() == "mine"
