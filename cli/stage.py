"""`ltx2 stage NAME --in A.zarr [--in B.zarr] --out C.zarr`: run one stage by hand (or for the orchestrator)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
import yaml


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=what)
        out[key.strip()] = value
    return out


def _reexec_with_optimized_blas() -> None:
    """Restart this process with the optimised BLAS preloaded (Linux), as `ltx2 run` starts stages, so a
    stage run by hand is as fast as, and computes exactly what, the orchestrator's would."""
    import os
    import sys

    from ltx2.orchestrator.runner import stage_env

    env = stage_env()
    if env.get("LD_PRELOAD", "") != os.environ.get("LD_PRELOAD", ""):
        os.execve(sys.executable, [sys.executable, "-m", "ltx2.cli.main", *sys.argv[1:]], env)


def stage(
    name: str = typer.Argument(..., help="text-encode, denoise, upscale, temporal-upscale, refine, decode, "
                                            "vocode or export"),
    inputs: list[Path] = typer.Option([], "--in", help="input artifact (repeat for several); its kind says its role"),
    out: Path = typer.Option(..., "--out", help="output artifact (.zarr), or the .mp4 for export"),
    sets: list[str] = typer.Option([], "--set", help="parameter KEY=VALUE (VALUE read as YAML), e.g. --set seed=7"),
    params_json: str = typer.Option(None, "--params-json", help="all parameters as one JSON object"),
    weights: list[str] = typer.Option([], "--weights", help="ROLE=PATH (checkpoint, gemma, spatial_upsampler, "
                                                          "temporal_upsampler, distilled_lora, lora.N with "
                                                          "--set 'loras=[strengths]'); default: the embedded tiny "
                                                          "model"),
    cache_key: str = typer.Option(None, "--cache-key", help="key to record (default: computed as `ltx2 run` does)"),
    budget: str = typer.Option(None, "--budget", help="memory budget, e.g. 10GB; refuses (exit 75) above it"),
    progress_fd: int = typer.Option(None, "--progress-fd", help="file descriptor for JSON-lines progress"),
) -> None:
    """Run one stage in this process. Exit 0 done, 2 bad input, 75 does not fit its memory budget."""
    _reexec_with_optimized_blas()
    from ltx2.orchestrator.job import parse_memory_size
    from ltx2.stages.base import execute

    params = json.loads(params_json) if params_json else {}
    for k, v in _pairs(sets, "--set").items():
        params[k] = yaml.safe_load(v)
    w = {k: Path(v).expanduser() for k, v in _pairs(weights, "--weights").items()}
    try:
        budget_bytes = parse_memory_size(budget) if budget else None
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--budget") from e
    code = execute(name, list(inputs), out, params, w or None, cache_key, budget_bytes, progress_fd)
    raise typer.Exit(code)
