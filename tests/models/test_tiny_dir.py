"""$LTX2_TINY_DIR: only a missing or empty folder, or a tiny model's own folder, is ever (re)generated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ltx2.models.tiny import MANIFEST, TinyDirError, check_tiny_dir, ensure_tiny_model
from ltx2.spec.errors import BadInputError


def test_a_users_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    mine = tmp_path / "notes.txt"
    mine.write_text("precious")
    with pytest.raises(TinyDirError, match="is a file, not a folder: it is left alone") as info:
        ensure_tiny_model(mine)
    assert isinstance(info.value, BadInputError) and info.value.exit_code == 2
    assert mine.read_text() == "precious"
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]  # nothing generated beside it either


def test_a_users_folder_is_refused_and_left_alone(tmp_path: Path) -> None:
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "gemma").write_text("a file named like a tiny model part")  # a name alone proves nothing
    with pytest.raises(TinyDirError, match="does not hold a tiny model"):
        ensure_tiny_model(mine)
    (mine / MANIFEST).write_text("not json")  # nor does a file named like the manifest
    with pytest.raises(TinyDirError):
        check_tiny_dir(mine)
    assert sorted(p.name for p in mine.iterdir()) == ["gemma", MANIFEST]
    assert [p.name for p in tmp_path.iterdir()] == ["photos"]


def test_a_folder_that_cannot_be_made_or_a_broken_link_is_refused(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(TinyDirError, match="cannot be made: .*afile is a file"):
        ensure_tiny_model(tmp_path / "afile" / "tiny")
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    with pytest.raises(TinyDirError, match="broken symlink"):
        ensure_tiny_model(tmp_path / "dangling")
    assert (tmp_path / "afile").read_text() == "x" and (tmp_path / "dangling").is_symlink()


def test_missing_empty_or_its_own_folder_may_be_generated(tmp_path: Path) -> None:
    assert check_tiny_dir(tmp_path / "new") == tmp_path / "new"
    (tmp_path / "empty").mkdir()
    assert check_tiny_dir(tmp_path / "empty") == tmp_path / "empty"
    old = tmp_path / "old"
    old.mkdir()
    (old / MANIFEST).write_text(json.dumps({"version": "0", "files": {"x": 1}}))  # an older generator's
    assert check_tiny_dir(old) == old
