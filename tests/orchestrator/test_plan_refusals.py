"""A config or input that some stage refuses stops `ltx2 plan` and `ltx2 run` (exit 2) before any stage runs."""

from __future__ import annotations

import json
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
