"""`ltx2 stage NAME --in A.zarr [--in PORT=B.zarr] --out C.zarr`: run one stage by hand (or for the
orchestrator). `ltx2 stage NAME --help` lists the stage's ports, weight roles and typed parameters."""

from __future__ import annotations

import json
import re
from pathlib import Path

import typer
import yaml
from rich.console import Console
from rich.table import Table

from ltx2.cli.stage_entry import reexec_with_optimized_blas
from ltx2.spec.errors import EXIT_BAD_INPUT, BadInputError
from ltx2.stages.base import execute
from ltx2.stages.contract import parse_memory_size
from ltx2.stages.registry import StageDef, stage_def, stage_names


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=what)
        out[key.strip()] = value
    return out


def _inputs(items: list[str]) -> list[tuple[str | None, Path]]:
    """``--in PATH`` (its kind picks the port) or ``--in PORT=PATH``."""
    out: list[tuple[str | None, Path]] = []
    for item in items:
        port, sep, path = item.partition("=")
        named = sep and port and "/" not in port and not port.endswith(".zarr")
        out.append((port, Path(path)) if named else (None, Path(item)))
    return out


def describe(stage: StageDef, console: Console) -> None:
    """The stage's ports, weight roles and parameters (type, default, meaning), from its registry entry."""
    console.print(f"[bold]{stage.name}[/] (version {stage.version}): {stage.summary}")
    ports = ", ".join(f"{n} ({p.kind}{', several' if p.many else ''}{', optional' if p.optional else ''})"
                      for n, p in stage.inputs.items()) or "none"
    console.print(f"inputs (--in [PORT=]PATH): {ports}")
    console.print(f"writes: {stage.output_kind + ' artifact' if stage.output_kind else 'a file'}"
                  f"{' (' + stage.output_name + ' in a job)' if stage.output_name else ''}")
    roles = ", ".join(f"{r}{' (' + part + ')' if part else ''}" for r, part in stage.weights.items())
    optional = ", ".join(stage.optional_weights)
    console.print(f"weights (--weights ROLE=PATH, default: the tiny model): {roles or 'none'}"
                  + (f"; optional: {optional}" if optional else ""))
    table = Table(title="parameters (--set KEY=VALUE, VALUE read as YAML; or --params-json)")
    for col in ("name", "type", "default", "meaning"):
        table.add_column(col)
    for name, f in stage.params.model_fields.items():
        kind = getattr(f.annotation, "__name__", None) or re.sub(r"[\w.]+\.(\w+)", r"\1", str(f.annotation))
        default = "required" if f.is_required() else json.dumps(
            stage.params.model_fields[name].default if not hasattr(f.default, "model_dump")
            else f.default.model_dump(mode="json"))
        table.add_row(name, kind, default, f.description or "")
    console.print(table)


def stage(
    ctx: typer.Context,
    name: str = typer.Argument(None, help="the stage: text-encode, denoise, upscale, temporal-upscale, refine, decode, "
                                          "vocode, export, preview"),
    inputs: list[str] = typer.Option([], "--in", help="input artifact, PATH or PORT=PATH (repeat for several); "
                                                      "without PORT its kind picks the port"),
    out: Path = typer.Option(None, "--out", help="output artifact (.zarr), or the file for export / preview"),
    sets: list[str] = typer.Option([], "--set", help="parameter KEY=VALUE (VALUE read as YAML), e.g. --set seed=7"),
    params_json: str = typer.Option(None, "--params-json", help="all parameters as one JSON object"),
    weights: list[str] = typer.Option([], "--weights", help="ROLE=PATH (see the stage's --help); default: the "
                                                          "embedded tiny model"),
    cache_key: str = typer.Option(None, "--cache-key", help="key to record (default: computed as `ltx2 run` does)"),
    budget: str = typer.Option(None, "--budget", help="memory budget, e.g. 10GB; refuses (exit 75) above it"),
    progress_fd: int = typer.Option(None, "--progress-fd", help="file descriptor for JSON-lines progress"),
    show_help: bool = typer.Option(False, "--help", "-h", is_eager=True, help="show this, and with NAME the "
                                                                              "stage's ports and parameters"),
) -> None:
    """Run one stage in this process. Exit 0 done, 2 bad input, 75 does not fit its memory budget."""
    console = Console()
    if show_help or name is None:
        console.print(ctx.get_help())
        try:
            if name is not None:
                describe(stage_def(name), console)
            else:
                console.print(f"stages: {', '.join(stage_names())}")
        except BadInputError as e:
            console.print(f"[red]error:[/] {e}")
            raise typer.Exit(EXIT_BAD_INPUT) from None
        raise typer.Exit(0 if show_help else EXIT_BAD_INPUT)
    if out is None:
        raise typer.BadParameter("give the output path", param_hint="--out")
    reexec_with_optimized_blas()  # done already when started through cli/stage_entry.py
    try:
        params = json.loads(params_json) if params_json else {}
    except json.JSONDecodeError as e:
        raise typer.BadParameter(f"not JSON: {e}", param_hint="--params-json") from None
    if not isinstance(params, dict):
        raise typer.BadParameter("give a JSON object, e.g. '{\"seed\": 7}'", param_hint="--params-json")
    for k, v in _pairs(sets, "--set").items():
        try:
            params[k] = yaml.safe_load(v)
        except yaml.YAMLError as e:
            raise typer.BadParameter(f"{k}={v!r} is not a YAML value: {e}", param_hint="--set") from None
    w = {k: Path(v).expanduser() for k, v in _pairs(weights, "--weights").items()}
    try:
        budget_bytes = parse_memory_size(budget) if budget else None
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--budget") from e
    code = execute(name, _inputs(inputs), out, params, w or None, cache_key, budget_bytes, progress_fd)
    raise typer.Exit(code)
