"""A damaged or foreign safetensors header: refused with the file and the fix, by every reader of headers (the
loaders, `ltx2 weights check`, the job's model slots), never as a traceback."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from ltx2.cli.main import app
from ltx2.models.tiny import ensure_tiny_model
from ltx2.models.weights import CheckpointError, read_header
from ltx2.models.weights import identify as ident
from ltx2.orchestrator.job import JobError, parse_job
from ltx2.stages.registry import readers_of

from support import ltx2


def raw_file(path: Path, header: bytes, body: bytes = b"\0" * 8) -> Path:
    path.write_bytes(struct.pack("<Q", len(header)) + header + body)
    return path


def js(obj) -> bytes:
    return json.dumps(obj).encode()


W = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}

BAD = {  # header -> words the refusal holds
    "list": (js([W]), "is a JSON array, not an object"),
    "string": (js("weights"), "is a JSON string, not an object"),
    "number": (js(42), "is a JSON number, not an object"),
    "null": (js(None), "is JSON null, not an object"),
    "no data_offsets": (js({"w": {"dtype": "F32", "shape": [2]}}), "tensor 'w' has no data_offsets"),
    "entry not an object": (js({"w": [0, 8]}), "tensor 'w' is described by a JSON array, not an object"),
    "no dtype": (js({"w": {"shape": [2], "data_offsets": [0, 8]}}), "tensor 'w' has no dtype"),
    "no shape": (js({"w": {"dtype": "F32", "data_offsets": [0, 8]}}), "tensor 'w' has no shape"),
    "offsets reversed": (js({"w": {**W, "data_offsets": [8, 0]}}), "tensor 'w' has data_offsets [8, 0]"),
    "offsets not a pair": (js({"w": {**W, "data_offsets": [0]}}), "tensor 'w' has data_offsets [0]"),
    "offsets not numbers": (js({"w": {**W, "data_offsets": ["0", "8"]}}), "tensor 'w' has data_offsets ['0', '8']"),
    "negative offset": (js({"w": {**W, "data_offsets": [-8, 0]}}), "tensor 'w' has data_offsets [-8, 0]"),
    "shape not a list": (js({"w": {**W, "shape": "2"}}), "tensor 'w' has shape '2'"),
    "negative dim": (js({"w": {**W, "shape": [-2]}}), "tensor 'w' has shape [-2]"),
    "bytes do not match": (js({"w": {**W, "data_offsets": [0, 4]}}),
                           "tensor 'w' (F32, shape [2]) needs 8 bytes but its data_offsets [0, 4] span 4"),
    "metadata not an object": (js({"__metadata__": ["x"], "w": W}), "__metadata__ is a JSON array, not an object"),
    "metadata value not text": (js({"__metadata__": {"config": {"a": 1}}, "w": W}),
                                "__metadata__ entry 'config' is a JSON object, not a string"),
    "not UTF-8": (b'{"w\xff": 1}', "not valid JSON"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_read_header_names_the_file_the_problem_and_the_fix(tmp_path, case):
    header, words = BAD[case]
    p = raw_file(tmp_path / "model.safetensors", header)
    with pytest.raises(CheckpointError) as e:
        read_header(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}: ") and words in msg, msg
    assert "re-download" in msg


def test_a_header_longer_than_safetensors_allows_is_refused_unread(tmp_path):
    p = tmp_path / "huge.safetensors"
    n = 200 << 20
    with open(p, "wb") as f:  # sparse: 200 MB of nothing that would otherwise be read and parsed
        f.write(struct.pack("<Q", n))
        f.truncate(8 + n + 8)
    with pytest.raises(CheckpointError, match="more than the 100 MB safetensors allows"):
        read_header(p)


@pytest.mark.parametrize("case", ["list", "no data_offsets", "metadata value not text"])
def test_weights_check_reports_it_and_exits_1(tmp_path, case):
    p = raw_file(tmp_path / "ltx-2-19b-distilled.safetensors", BAD[case][0])
    assert ident.identify(p, readers=readers_of).kind == ident.UNREADABLE
    r = CliRunner().invoke(app, ["weights", "check", str(p)], terminal_width=200)
    out = " ".join(r.output.split())
    assert r.exit_code == 1, out
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception  # no traceback
    assert BAD[case][1] in out and "have problems" in out, out


@pytest.mark.parametrize("case", ["list", "no data_offsets"])
def test_a_job_naming_such_a_file_is_refused_before_any_stage(tmp_path, case):
    ckpt = raw_file(tmp_path / "ltx-2-19b-distilled.safetensors", BAD[case][0])
    lora = raw_file(tmp_path / "lora.safetensors", BAD[case][0])
    with pytest.raises(JobError) as e:
        parse_job({"prompt": "x", "pipeline": "distilled", "model": {"checkpoint": str(ckpt)}})
    assert len(e.value.problems) == 1
    found = e.value.problems[0]
    assert found.startswith("model.checkpoint: ") and "is not a readable safetensors file" in found
    assert BAD[case][1] in found and "give the path of the single-file LTX-2 checkpoint" in found
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({"prompt": "x", "pipeline": "distilled", "width": 64, "height": 64, "frames": 9,
                                   "output": str(tmp_path / "out.mp4"), "work_dir": str(tmp_path / "work"),
                                   "model": {"checkpoint": str(ckpt), "loras": [{"path": str(lora)}]}}))
    for cmd in ("plan", "run"):
        r = ltx2(cmd, str(job), check=False)
        assert r.returncode == 2, (r.stdout, r.stderr)
        assert "Traceback" not in r.stdout + r.stderr
        assert "model.checkpoint" in r.stdout + r.stderr and "model.loras" in r.stdout + r.stderr
    assert not (tmp_path / "work").exists()


def test_a_gemma_folder_with_a_damaged_shard_is_refused_before_any_stage(tmp_path):
    gemma = shutil.copytree(ensure_tiny_model()["gemma"], tmp_path / "gemma")
    shard = sorted(gemma.glob("model-*.safetensors"))[0]
    raw_file(shard, BAD["no data_offsets"][0])
    rep = ident.identify(gemma, readers=readers_of)
    assert rep.kind == ident.GEMMA
    assert any(p.startswith(f"{shard.name} is not a readable safetensors file (") for p in rep.problems), rep.problems
    with pytest.raises(JobError) as e:
        parse_job({"prompt": "x", "pipeline": "distilled", "model": {"gemma": str(gemma)}})
    found = " ".join(e.value.problems)
    assert found.startswith("model.gemma: ") and shard.name in found and "has no data_offsets" in found, found
    r = CliRunner().invoke(app, ["weights", "check", str(gemma)], terminal_width=200)
    assert r.exit_code == 1 and "has no data_offsets" in " ".join(r.output.split())
