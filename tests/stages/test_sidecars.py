"""A file output's sidecar (export's video, the preview's PNG): reused only while the file is the one recorded."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from ltx2.stages.base import file_cached, record_file, sidecar

KEY = "ab" * 32


@pytest.fixture
def video(tmp_path) -> Path:
    out = tmp_path / "out.mp4"
    out.write_bytes(os.urandom(3000))
    record_file(out, KEY, {"frames.zarr": "k1", "audio.zarr": "k2"}, {"crf": 18})
    return out


def test_the_record_holds_the_key_size_and_hash(video):
    rec = json.loads(sidecar(video).read_text())
    assert rec["cache_key"] == KEY and rec["inputs"] == {"frames.zarr": "k1", "audio.zarr": "k2"}
    assert rec["size"] == 3000 and rec["sha256"] == hashlib.sha256(video.read_bytes()).hexdigest()
    assert file_cached(video, KEY) == (True, "")
    assert file_cached(video, "cd" * 32) == (False, "made from other inputs")


def test_a_truncated_file_is_not_reused(video):
    with open(video, "r+b") as f:
        f.truncate(1000)
    ok, why = file_cached(video, KEY)
    assert not ok and why.startswith("unusable (damaged: out.mp4 has 1000 bytes, made with 3000)")


def test_a_file_changed_in_place_is_not_reused(video):
    raw = bytearray(video.read_bytes())
    raw[1500] ^= 0xFF  # same size: only the hash tells
    video.write_bytes(bytes(raw))
    ok, why = file_cached(video, KEY)
    assert not ok and why.startswith("unusable (damaged: out.mp4 no longer hashes")


def test_a_record_without_size_and_hash_is_not_trusted(video):
    sidecar(video).write_text(json.dumps({"cache_key": KEY}))  # what an older build wrote
    ok, why = file_cached(video, KEY)
    assert not ok and "holds no size and sha256" in why and why.startswith("unusable")
    sidecar(video).write_text("{half")
    ok, why = file_cached(video, KEY)
    assert not ok and why.startswith("unusable (its record out.mp4.ltx2.json is unreadable)")


def test_a_missing_file_or_record_is_not_made_yet(video):
    sidecar(video).unlink()
    assert file_cached(video, KEY) == (False, "not made yet")
