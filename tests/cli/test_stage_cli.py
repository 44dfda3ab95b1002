"""`ltx2 stage` by hand: every bad argument refused (exit 2, the option, the value and the fix, no traceback),
the one line it prints when it ends, --recompute, and flags that read as flags in --help."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ltx2.artifacts_schema import open_artifact
from ltx2.cli.main import app

from support import ltx2


def stage(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(app, ["stage", *args], terminal_width=200)
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception  # no traceback
    return r.exit_code, " ".join(r.output.split())


@pytest.fixture
def given(tmp_path: Path) -> Path:
    """A stand-in input artifact (refusals happen before anything is opened)."""
    art = tmp_path / "latents.zarr"
    art.mkdir()
    (art / "zarr.json").write_text("{}")
    return art


@pytest.mark.parametrize("args, words", [
    (["--set", "seed"], ["--set: 'seed' is not KEY=VALUE; write e.g. --set seed=7"]),
    (["--set", "=7"], ["--set: '=7' is not KEY=VALUE"]),
    (["--set", "seed=["], ["--set: seed='[': the value is not YAML", "quote text"]),
    (["--set", "seed=1", "--set", "seed=2"], ["--set: seed is given twice ('1' and '2'); give it once"]),
    (["--params-json", "{seed: 7}"], ["--params-json: '{seed: 7}' is not JSON", 'e.g. \'{"seed": 7}\'']),
    (["--params-json", "[7]"], ["--params-json: '[7]' is not a JSON object"]),
    (["--weights", "checkpoint"], ["--weights: 'checkpoint' is not KEY=VALUE; write e.g. --weights checkpoint=PATH"]),
    (["--budget", "lots"], ["--budget: 'lots' is not a memory size"]),
    (["--progress-fd", "987"], ["--progress-fd: 987 is not an open file descriptor"]),
])
def test_bad_arguments_are_refused_naming_option_and_value(given: Path, tmp_path: Path, args, words) -> None:
    out = tmp_path / "frames.zarr"
    code, text = stage("decode", "--in", str(given), "--out", str(out), *args)
    assert code == 2 and all(w in text for w in words), text
    assert not out.exists()


def test_no_output_is_refused(given: Path) -> None:
    code, text = stage("decode", "--in", str(given))
    assert code == 2 and "--out: missing; give the output path" in text


@pytest.mark.parametrize("spelled", ["same", "port", "relative", "link"])
def test_an_output_that_is_one_of_the_inputs_is_refused(given: Path, tmp_path: Path, monkeypatch, spelled) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "alias.zarr").symlink_to(given)
    ins = {"same": str(given), "port": f"latents={given}", "relative": str(given), "link": str(given)}[spelled]
    out = {"same": str(given), "port": str(given), "relative": "latents.zarr", "link": "alias.zarr"}[spelled]
    before = sorted(p.name for p in given.iterdir())
    code, text = stage("decode", "--in", ins, "--out", out)
    assert code == 2 and f"--out: '{out}' is also an input (--in {ins})" in text, text
    assert "the stage would replace what it reads" in text
    assert sorted(p.name for p in given.iterdir()) == before and (given / "zarr.json").read_text() == "{}"


def test_an_output_folder_that_cannot_be_made_is_refused(given: Path, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("mine")
    (tmp_path / "loop1").symlink_to("loop2")
    (tmp_path / "loop2").symlink_to("loop1")
    code, text = stage("decode", "--in", str(given), "--out", str(tmp_path / "afile" / "frames.zarr"))
    assert code == 2 and f"cannot be made: {tmp_path / 'afile'} is a file, not a folder" in text, text
    code, text = stage("decode", "--in", str(given), "--out", str(tmp_path / "loop1" / "frames.zarr"))
    assert code == 2 and "cannot be followed (Symlink loop" in text, text
    assert (tmp_path / "afile").read_text() == "mine"


def test_a_users_file_or_folder_at_out_is_left_alone(tmp_path: Path) -> None:
    """Only what the stage writes is ever replaced at --out (a stage process: the checks follow its BLAS re-exec)."""
    mine, photos = tmp_path / "notes", tmp_path / "photos"
    mine.write_text("precious")
    photos.mkdir()
    (photos / "a.jpg").write_text("jpeg")
    for out, words in ((mine, "is a file, not an artifact: it is left alone"),
                       (photos, "is a folder that holds no artifact: it is left alone")):
        r = ltx2("stage", "text-encode", "--set", "prompt=a fox", "--out", str(out), check=False)
        text = " ".join((r.stdout + r.stderr).split())
        assert r.returncode == 2 and words in text and "Traceback" not in text, text
    r = ltx2("stage", "export", "--in", str(photos), "--out", str(photos), check=False)
    assert r.returncode == 2 and "is also an input" in " ".join(r.stdout.split())
    assert mine.read_text() == "precious" and [p.name for p in photos.iterdir()] == ["a.jpg"]


def test_boolean_flags_read_as_flags_in_help() -> None:
    r = CliRunner().invoke(app, ["stage", "--help"], terminal_width=200)
    text = r.output
    assert r.exit_code == 0
    flags = [line for line in text.splitlines() if re.match(r"^\S? ?--(recompute|help)\b", line)]
    assert len(flags) == 2 and "--reuse" in flags[0], flags
    assert all("<bool>" not in line for line in flags), flags
    assert "<path>" in text  # options with values still show their type


@pytest.mark.slow
def test_a_stage_says_what_it_wrote_or_reused_its_time_and_peak(tmp_path: Path) -> None:
    out = tmp_path / "text.zarr"
    line = re.compile(r"^text-encode: (wrote|reused) (\S+)( \(already made with this key\))?; [0-9.]+ s, "
                      r"peak [0-9.]+ (MB|GB)$")
    args = ("stage", "text-encode", "--set", "prompt=a fox", "--out", str(out))
    first = ltx2(*args).stdout.strip().splitlines()[-1]
    assert (m := line.match(first)) and m[1] == "wrote" and m[2] == str(out), first
    key = open_artifact(out).cache_key
    again = ltx2(*args).stdout.strip().splitlines()[-1]
    assert (m := line.match(again)) and m[1] == "reused" and m[3], again
    # --recompute computes it again and replaces it only once the new one is complete; refused before that
    # (here: a budget it cannot fit), the finished artifact stays as it was
    shutil.copytree(out, tmp_path / "before.zarr", symlinks=True)
    r = ltx2(*args, "--recompute", "--budget", "1MB", check=False)
    assert r.returncode == 75 and "text-encode: failed (exit 75)" in r.stdout
    open_artifact(out).verify()
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == \
        sorted(p.relative_to(tmp_path / "before.zarr") for p in (tmp_path / "before.zarr").rglob("*"))
    recomputed = ltx2(*args, "--recompute").stdout.strip().splitlines()[-1]
    assert (m := line.match(recomputed)) and m[1] == "wrote", recomputed
    assert open_artifact(out).cache_key == key
