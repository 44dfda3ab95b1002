"""Parity against the official PyTorch implementation, on fixtures written by the oracle script.

A fixture is ``<name>.npz`` (inputs, reference outputs) beside ``<name>.safetensors`` (weights
under the official checkpoint keys, config in the metadata). Each implemented fixture name maps
to a check function in ``CHECKS``; the check runs the MLX component in float32 and returns one
``ParityResult`` per output it compares (the ``*_half`` ones in each compute precision: parity/precision.py).
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# fixture name -> "module:function" (module relative to this package). Lazy, so one broken
# component cannot stop the others from being checked.
CHECKS: dict[str, str] = {}
CHECKS["audio_vae"] = "audio:check_audio_vae"
CHECKS["audio_vae_attn"] = "audio:check_audio_vae"
CHECKS["vocoder"] = "audio:check_vocoder"
CHECKS["vocoder_amp"] = "audio:check_vocoder"
CHECKS["transformer_ltx2"] = "transformer:check_transformer"
CHECKS["transformer_ltx23"] = "transformer:check_transformer"
CHECKS["gemma3_tiny"] = "text:check_gemma3"
CHECKS["connector_ltx2"] = "text:check_connector"
CHECKS["connector_ltx23"] = "text:check_connector"
CHECKS["upsampler_x2"] = "upsampler:check_upsampler"
CHECKS["upsampler_x2_rational"] = "upsampler:check_upsampler"
CHECKS["upsampler_x1_5_rational"] = "upsampler:check_upsampler"
CHECKS["upsampler_temporal_x2"] = "upsampler:check_upsampler"
CHECKS["schedules_positions"] = "sampling:check_schedules"
CHECKS["guidance"] = "sampling:check_guidance"
CHECKS["res2s"] = "sampling:check_res2s"
CHECKS["pipeline_two_stage_tiny"] = "pipeline:check_pipeline"
CHECKS["video_vae"] = "video_vae:check_video_vae"
CHECKS["video_vae_timestep_cond"] = "video_vae:check_video_vae"
CHECKS["transformer_fp8_cast"] = "weights:check_fp8"
CHECKS["transformer_fp8_scaled"] = "weights:check_fp8"
CHECKS["transformer_lora"] = "weights:check_lora"

# half-precision compute against the official code run in bf16 / fp16 (tests/fixtures/half, parity/precision.py)
CHECKS["transformer_ltx2_half"] = "precision:check_transformer"
CHECKS["video_vae_half"] = "precision:check_video_vae"
CHECKS["video_vae_timestep_cond_half"] = "precision:check_video_vae"
CHECKS["audio_vae_half"] = "precision:check_audio_vae"
CHECKS["vocoder_half"] = "precision:check_vocoder"
CHECKS["upsampler_x2_half"] = "precision:check_upsampler"
CHECKS["connector_ltx2_half"] = "precision:check_connector"
CHECKS["pipeline_two_stage_tiny_half"] = "precision:check_pipeline"

# Fixture sets made with the official code as it is now (v1.2.0, not on PyPI; ../shared/oracle/fixtures-v12): the
# same fixture names can mean other semantics there (e.g. transformer_ltx2 with the v1.2.0 A/V AdaLN timestep
# rule), so they have their own table. Where 1.0.0 and v1.2.0 differ, v1.2.0 is the truth.
CHECKS_V12: dict[str, str] = {}
CHECKS_V12["transformer_ltx2"] = "transformer:check_transformer"
CHECKS_V12["transformer_ltx23"] = "transformer:check_transformer"
CHECKS_V12["connector_ltx23"] = "text:check_connector"
CHECKS_V12["vocoder_bwe"] = "audio:check_vocoder_bwe"
CHECKS_V12["video_vae_ltx23"] = "video_vae:check_video_vae"
CHECKS_V12["duration_head"] = "duration:check_duration_head"  # LTX-2.5
# the conditioning workflows, each replayed stage by stage (parity/conditioning.py)
for _name in ("cond_i2v_distilled_ltx23", "cond_i2v_distilled_ltx2", "cond_i2v_latent_index_ltx23",
              "cond_keyframes_ltx23", "cond_ic_lora_ltx23", "cond_a2v_ltx23", "cond_retake_ltx23"):
    CHECKS_V12[_name] = "conditioning:check_conditioning"

NETWORK_TOL = 1e-4
PIPELINE_TOL = 1e-3
SCHEDULE_TOL = 1e-6


@dataclass(frozen=True)
class ParityResult:
    fixture: str
    output: str
    rel_err: float | None  # None: not compared (not implemented, or the check raised)
    tol: float | None
    status: str  # "pass" | "FAIL" | "not implemented" | "ERROR"
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("pass", "not implemented")


def rel_err(out, ref) -> float:
    """||out - ref|| / ||ref|| in float64 (0 when both are zero)."""
    out = np.asarray(out, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if out.shape != ref.shape:
        raise ValueError(f"shape {out.shape} differs from reference {ref.shape}")
    denom = np.linalg.norm(ref)
    num = np.linalg.norm(out - ref)
    return float(num / denom) if denom > 0 else float(num)


def compare(fixture: str, output: str, out, ref, tol: float = NETWORK_TOL) -> ParityResult:
    try:
        err = rel_err(out, ref)
    except ValueError as e:
        return ParityResult(fixture, output, None, tol, "FAIL", str(e))
    return ParityResult(fixture, output, err, tol, "pass" if err <= tol else "FAIL")


def oracle_version(directory: Path) -> str:
    """"1.2.0" for a set made by the v1.2.0 oracle (its manifest says so), else "1.0.0" (the PyPI packages)."""
    try:
        env = json.loads((Path(directory) / "manifest.json").read_text()).get("_env") or {}
    except (OSError, ValueError):
        env = {}
    return "1.2.0" if str(env.get("ltx_core", "")).startswith("1.2") else "1.0.0"


def checks_for(directory: Path) -> dict[str, str]:
    return CHECKS_V12 if oracle_version(directory) == "1.2.0" else CHECKS


def fixture_names(directory: Path) -> list[str]:
    return sorted(p.stem for p in Path(directory).glob("*.npz"))


def run_fixture(directory: Path, name: str) -> list[ParityResult]:
    target = checks_for(directory).get(name)
    if target is None:
        return [ParityResult(name, "-", None, None, "not implemented")]
    mod_name, fn_name = target.split(":")
    try:
        fn = getattr(importlib.import_module(f"{__name__}.{mod_name}"), fn_name)
        return list(fn(Path(directory), name))
    except Exception as e:  # noqa: BLE001 - one fixture's failure is reported, not fatal to the table
        return [ParityResult(name, "-", None, None, "ERROR", f"{type(e).__name__}: {e}")]


def run_all(directory: Path, only: list[str] | None = None) -> list[ParityResult]:
    results: list[ParityResult] = []
    for name in fixture_names(directory):
        if only and name not in only:
            continue
        results.extend(run_fixture(directory, name))
    return results


def load_fixture(directory: Path, name: str) -> dict[str, np.ndarray]:
    with np.load(Path(directory) / f"{name}.npz") as z:
        return {k: z[k] for k in z.files}
