"""Helpers shared by several test modules (tests/ is on pytest's pythonpath)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
import yaml

from ltx2.models.weights import fp8, load_tensors, read_header

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "tiny.yaml"


def ltx2(*args: str, env: dict | None = None, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "ltx2.cli.main", *args], capture_output=True, text=True,
                       env={**os.environ, **(env or {})}, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"ltx2 {' '.join(args)} exited {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


_NP = {"F32": np.float32, "U8": np.uint8, "F8_E4M3": np.uint8, "BF16": np.uint16}


def write_job(folder: Path, example: Path = EXAMPLE, **changes) -> Path:
    """``example`` as ``folder/job.yaml``, rendering into ``folder`` (out.mp4, work/), with ``changes`` applied."""
    job = yaml.safe_load(example.read_text())
    job.update(output=str(folder / "out.mp4"), work_dir=str(folder / "work"), **changes)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "job.yaml").write_text(yaml.safe_dump(job))
    return folder / "job.yaml"


def statuses(folder: Path) -> dict[str, str]:
    """Stage name -> status in the manifest of the job written by ``write_job(folder)``."""
    m = json.loads((folder / "work" / "manifest.json").read_text())
    return {s["name"]: s["status"] for s in m["stages"]}


def bf16_bits(a: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), rounded to nearest even as every framework rounds."""
    bits = np.ascontiguousarray(a, np.float32).view(np.uint32).astype(np.uint64)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def write_raw(path: Path, tensors: dict[str, tuple[str, np.ndarray]], metadata: dict) -> Path:
    """A safetensors file from (dtype tag, array of the stored bits) pairs: numpy has no bf16 / fp8."""
    header: dict = {"__metadata__": metadata}
    blobs, offset = [], 0
    for k, (tag, a) in tensors.items():
        data = np.ascontiguousarray(a, dtype=_NP[tag]).tobytes()
        header[k] = {"dtype": tag, "shape": list(a.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head + b"".join(blobs))
    return path


def fp8_pair(src: Path, dst: Path, twin: Path, extra: dict | None = None) -> None:
    """``dst``: ``src`` with every float ``*.weight`` of 2+ dims stored scaled fp8 (alternating the official
    ``weight_scale`` + ``input_scale`` and ComfyUI's ``scale_weight`` spellings) and every ``*.bias`` cast-only fp8;
    ``twin``: the exact dequantised values, float32. Loading either must give the same parameters."""
    h = read_header(src)
    values = load_tensors(h, list(h.tensors), mx.float32)
    out: dict = {}
    ref: dict = {}
    for i, (k, v) in enumerate(sorted(values.items())):
        if k.endswith(".weight") and v.ndim >= 2:
            q, s = fp8.quantize(v)
            out[k] = ("F8_E4M3", np.array(q))
            if i % 2:
                out[k[: -len(".weight")] + ".weight_scale"] = ("F32", np.array(s).reshape(()))
                out[k[: -len(".weight")] + ".input_scale"] = ("F32", np.array(0.02, np.float32).reshape(()))
            else:
                out[k[: -len(".weight")] + ".scale_weight"] = ("F32", np.array(s).reshape(()))
            ref[k] = ("F32", np.array(mx.from_fp8(q, dtype=mx.float32) * s))
        elif k.endswith(".bias"):
            q = mx.to_fp8(v)
            out[k] = ("F8_E4M3", np.array(q))
            ref[k] = ("F32", np.array(mx.from_fp8(q, dtype=mx.float32)))
        else:  # kept as stored (bf16 in the official fp8 files)
            out[k] = ("BF16", bf16_bits(np.array(v))) if h.tensors[k].dtype == "BF16" else ("F32", np.array(v))
            ref[k] = ("F32", np.array(v))
    out.update(extra or {})
    write_raw(dst, out, h.metadata)
    write_raw(twin, ref, h.metadata)


# ---------------------------------------------------------------------------------- the v1.2.0 oracle's fixtures
# Made with the official code v1.2.0, which is not on PyPI: data read from ../shared (CI has it), never regenerated.
V12_ENV = "LTX2_V12_FIXTURES"


def v12_fixture_sets() -> list[Path]:
    """The v1.2.0 fixture folders: $LTX2_V12_FIXTURES (one folder), else ../shared/oracle/fixtures-v12 and its
    second draw fixtures-v12-check beside this checkout. Under CI=true a missing folder fails the run; elsewhere
    the tests that need it are skipped with one line naming the folder."""
    given = os.environ.get(V12_ENV)
    oracle = ROOT.parent / "shared" / "oracle"
    sets = [Path(given)] if given else [oracle / "fixtures-v12", oracle / "fixtures-v12-check"]
    present = [s for s in sets if (s / "manifest.json").is_file()]
    if not present:
        where = given or str(oracle / "fixtures-v12")
        if os.environ.get("CI") == "true":
            pytest.fail(f"the v1.2.0 parity fixtures are missing: {where} (CI must have ../shared)")
        pytest.skip(f"v1.2.0 fixtures not found at {where}: skipped (set ${V12_ENV} to run them)")
    return present


# the two v1.2.0 draws, for tests parametrised over them (a draw beyond the folders given is skipped)
V12_DRAWS = pytest.mark.parametrize("draw", [0, 1], ids=["fixtures-v12", "fixtures-v12-check"])


def v12_set(draw: int) -> Path:
    """The folder of v1.2.0 draw ``draw`` (skipped when absent, as v12_fixture_sets says)."""
    sets = v12_fixture_sets()
    if draw >= len(sets):
        pytest.skip("only one v1.2.0 fixture folder given")
    return sets[draw]


def load_npz(folder: Path, name: str) -> dict:
    """A fixture's arrays by name."""
    with np.load(Path(folder) / f"{name}.npz") as z:
        return {k: z[k] for k in z.files}


def rel(out, ref) -> float:
    """||out - ref|| / ||ref||, in float64."""
    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    return float(np.linalg.norm(out - ref) / np.linalg.norm(ref))
