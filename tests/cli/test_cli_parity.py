"""`ltx2 parity DIR`: the table, unimplemented fixtures listed as such, exit 1 on a real mismatch."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from ltx2.cli.main import app

SEED0 = Path(__file__).parents[1] / "fixtures" / "seed0"


def test_parity_table_and_not_implemented_rows():
    r = CliRunner().invoke(app, ["parity", str(SEED0), "--only", "connector_ltx2", "--only", "transformer_ltx23"])
    assert r.exit_code == 0, r.output
    assert "out_video_encoding" in r.output and "pass" in r.output
    assert "transformer_ltx23" in r.output and "not implemented" in r.output
    assert "0 fail" in r.output


def test_parity_fails_on_a_wrong_reference(tmp_path):
    for f in ("connector_ltx2.npz", "connector_ltx2.safetensors"):
        shutil.copy2(SEED0 / f, tmp_path / f)
    z = dict(np.load(tmp_path / "connector_ltx2.npz"))
    z["out_audio_encoding"] = z["out_audio_encoding"] * 1.001  # a 1e-3 error: above the 1e-4 tolerance
    np.savez(tmp_path / "connector_ltx2.npz", **z)
    r = CliRunner().invoke(app, ["parity", str(tmp_path)])
    assert r.exit_code == 1
    assert "FAIL" in r.output and "out_audio_encoding" in r.output


def test_parity_rejects_a_folder_without_fixtures(tmp_path):
    r = CliRunner().invoke(app, ["parity", str(tmp_path)])
    assert r.exit_code != 0
