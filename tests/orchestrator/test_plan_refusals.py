"""A config or input that some stage refuses stops `ltx2 plan` and `ltx2 run` (exit 2) before any stage runs."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import pytest
import yaml

from support import ltx2

from ltx2.models.tiny import ensure_tiny_model


def _with_config(src: Path, dst: Path, edit) -> Path:
    """A copy of safetensors file ``src`` whose config metadata ``edit`` changed (tensor bytes untouched)."""
    raw = src.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    config = json.loads(header["__metadata__"]["config"])
    edit(config)
    header["__metadata__"]["config"] = json.dumps(config)
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    dst.write_bytes(struct.pack("<Q", len(head)) + head + raw[8 + n:])
    return dst


def _job(tmp_path: Path, checkpoint: Path, **fields) -> Path:
    tiny = ensure_tiny_model()
    model = {"checkpoint": str(checkpoint), "gemma": str(tiny["gemma"]),
             "spatial_upsampler": str(tiny["spatial_upsampler"])}
    job = {"pipeline": "distilled", "prompt": "a fox", "width": 128, "height": 64, "frames": 9, "model": model,
           "work_dir": "work", "output": "out.mp4", **fields}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def _refused_before_any_stage(job: Path, *words: str) -> None:
    for cmd in ("plan", "run"):
        r = ltx2(cmd, str(job), check=False)
        out = " ".join((r.stdout + r.stderr).split())
        assert r.returncode == 2, (cmd, r.returncode, out)
        assert "Traceback" not in out and all(w in out for w in words), (cmd, out)
    work = job.parent / "work"
    assert not work.exists() or not [p for p in work.rglob("*.zarr*")]  # nothing was computed
    assert not (job.parent / "out.mp4").exists()


def test_a_refused_decode_config_stops_plan_and_run(tmp_path):
    ckpt = _with_config(ensure_tiny_model()["checkpoint"], tmp_path / "odd-vae.safetensors",
                        lambda c: c["vae"].update(norm_layer="group_norm"))
    _refused_before_any_stage(_job(tmp_path, ckpt), "decode", "norm_layer", "group_norm")


def test_an_stg_block_beyond_the_model_stops_plan_and_run(tmp_path):
    tiny = ensure_tiny_model()
    job = _job(tmp_path, tiny["checkpoint"], pipeline="one-stage", steps=2,
               guidance={"video": {"stg_blocks": [7]}})
    _refused_before_any_stage(job, "stg_blocks", "7", "0..1")


@pytest.mark.parametrize("edit, words", [
    (lambda c: c["vocoder"].update(resblock="3"), ("vocoder", "resblock", "'3'")),
])
def test_a_refused_vocoder_config_stops_plan_and_run(tmp_path, edit, words):
    ckpt = _with_config(ensure_tiny_model()["checkpoint"], tmp_path / "odd-voc.safetensors", edit)
    _refused_before_any_stage(_job(tmp_path, ckpt), *words)


# ----------------------------------------------------------------------------- bad input in the job itself

def _tree(root: Path) -> dict[str, tuple]:
    """Everything under ``root`` (links not followed): a link's target, a file's bytes and mtime, a folder's
    mtime (an entry made and removed again shows there)."""
    out: dict[str, tuple] = {}
    for p in sorted(root.rglob("*")):
        key = str(p.relative_to(root))
        if p.is_symlink():
            out[key] = ("link", os.readlink(p))
        elif p.is_dir():
            out[key] = ("dir", p.stat().st_mtime_ns)
        else:
            out[key] = ("file", hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
    return out


@pytest.fixture
def finished(tmp_path: Path) -> Path:
    """A folder as a finished render leaves it (contents stand-ins): out.mp4 with its record, work/ with the
    manifest naming this job and a link into the job's store, a user's file and a symlink loop beside them."""
    entry = tmp_path / "store" / "ab" / ("ab" * 32 + ".zarr")
    entry.mkdir(parents=True)
    (entry / "zarr.json").write_text("{}")
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "text.zarr").symlink_to(entry)
    (tmp_path / "work" / "manifest.json").write_text(json.dumps({"job": str(tmp_path / "job.yaml")}))
    (tmp_path / "out.mp4").write_bytes(b"a finished video")
    (tmp_path / "out.mp4.ltx2.json").write_text(json.dumps({"cache_key": "cd" * 32}))
    (tmp_path / "afile").write_text("mine")
    (tmp_path / "loop1").symlink_to("loop2")
    (tmp_path / "loop2").symlink_to("loop1")
    return tmp_path


def _write(folder: Path, **fields) -> Path:
    job = {"pipeline": "distilled", "prompt": "a fox", "width": 128, "height": 64, "frames": 9, "work_dir": "work",
           "output": "out.mp4", "store": "store", **fields}
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def _refused_and_untouched(job: Path, commands: tuple[str, ...], *words: str) -> None:
    """Each command exits 2 naming ``words``, with no traceback and no advice to run it again; nothing in the
    job's folder (its finished video, work folder and store) changes."""
    before = _tree(job.parent)
    for cmd in commands:
        r = ltx2(cmd, str(job), check=False)
        out = " ".join((r.stdout + r.stderr).split())
        assert r.returncode == 2, (cmd, r.returncode, out)
        assert "Traceback" not in out and "run the same command again" not in out, (cmd, out)
        assert all(w in out for w in words), (cmd, words, out)
    assert _tree(job.parent) == before


def test_a_prompt_longer_than_the_text_encoder_takes_is_refused_when_planned(finished):
    job = _write(finished, prompt="a red fox " * 200)
    _refused_and_untouched(job, ("plan", "run"), "text-encode: prompt: 'a red fox", "1201 tokens long",
                           "takes at most 1024", "shorten it by at least 177 tokens")


def test_a_negative_prompt_longer_than_the_text_encoder_takes_is_refused(finished):
    job = _write(finished, pipeline="one-stage", steps=2, negative_prompt="blurry " * 200)
    _refused_and_untouched(job, ("run",), "negative_prompt: 'blurry blurry", "1201 tokens long", "at most 1024")


def test_huge_sizes_are_refused_when_the_job_is_read(finished):
    job = _write(finished, width=65536, height=65536, frames=1001)
    _refused_and_untouched(job, ("plan", "run"), "width: 65536 is above 4096 px", "height: 65536",
                           "use at most 4096")


@pytest.mark.parametrize("fields, words", [
    ({"pipeline": "one-stage", "steps": 2, "guidance": {"video": {"cfg": float("nan")}}},
     ("guidance.video.cfg: nan is not a finite number",)),
    ({"fps": float("inf")}, ("fps: inf is not a finite number",)),
    ({"output": "afile/out.mp4"}, ("output: 'afile/out.mp4' cannot be made:", "afile is a file, not a folder")),
    ({"output": "work"}, ("output: 'work' is not an .mp4 path",)),
    ({"work_dir": "loop1"}, ("work_dir: 'loop1' cannot be followed", "Symlink loop")),
    ({"store": "afile/store"}, ("store: 'afile/store' cannot be made:",)),
    ({"tiling": "sometimes"}, ("tiling: 'sometimes' is not a tiling mode",)),
])
def test_bad_fields_are_refused_before_anything(finished, fields, words):
    _refused_and_untouched(_write(finished, **fields), ("run",), *words)


def test_a_job_file_that_is_not_utf8_or_repeats_a_key_is_refused(finished):
    job = _write(finished)
    job.write_bytes(job.read_bytes() + b"negative_prompt: caf\xe9\n")
    _refused_and_untouched(job, ("run",), "(file): is not UTF-8 text (byte 0xe9 at line 9, column 21)")
    job = _write(finished)
    job.write_text(job.read_text() + "seed: 7\nseed: 8\n")
    _refused_and_untouched(job, ("plan",), "'seed' at line 10, column 1: the key is given twice (first at line 9")


def test_a_work_dir_another_job_holds_is_refused_naming_that_job(finished):
    other = finished / "first.yaml"
    other.write_text("prompt: a cat\nwork_dir: work\n")
    (finished / "work" / "manifest.json").write_text(json.dumps({"job": str(other)}))
    job = _write(finished)
    _refused_and_untouched(job, ("plan", "run"), f"work_dir: '{finished / 'work'}' holds the work of another job, "
                                                 f"{other}", "give job.yaml its own work_dir")


def test_a_tiny_model_folder_that_is_a_users_file_is_left_alone(finished, tmp_path):
    job = _write(finished)
    before = _tree(finished)
    for cmd in (("plan", str(job)), ("run", str(job)),
                ("stage", "text-encode", "--set", "prompt=a fox", "--out", str(tmp_path / "t.zarr"))):
        r = ltx2(*cmd, env={"LTX2_TINY_DIR": str(finished / "afile")}, check=False)
        out = " ".join((r.stdout + r.stderr).split())
        assert r.returncode == 2 and "Traceback" not in out, (cmd, out)
        assert f"{finished / 'afile'} (the tiny model's folder) is a file, not a folder: it is left alone" in out
    assert (finished / "afile").read_text() == "mine" and _tree(finished) == before
