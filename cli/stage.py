"""`ltx2 stage NAME --in A.zarr [--in PORT=B.zarr] --out C.zarr`: run one stage by hand (or for the
orchestrator). `ltx2 stage NAME --help` lists the stage's ports, weight roles and typed parameters."""

from __future__ import annotations

import json
import os
import re
import resource
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import typer
import yaml
from rich.console import Console
from rich.table import Table

from ltx2.cli.stage_entry import reexec_with_optimized_blas
from ltx2.spec.errors import EXIT_BAD_INPUT, BadInputError
from ltx2.stages.base import execute
from ltx2.stages.contract import parse_memory_size
from ltx2.stages.registry import StageDef, stage_def, stage_names


class _Refused(Exception):
    """A bad command line: the option, the value and the fix (exit 2, no traceback)."""

    def __init__(self, option: str, message: str):
        super().__init__(f"{option}: {message}")


def _pairs(items: list[str], what: str, example: str) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise _Refused(what, f"{item!r} is not KEY=VALUE; write e.g. {what} {example}")
        if key.strip() in out:
            raise _Refused(what, f"{key.strip()} is given twice ({out[key.strip()]!r} and {value!r}); give it once")
        out[key.strip()] = value
    return out


def parse_params(params_json: str | None, sets: list[str]) -> dict[str, Any]:
    """``--params-json`` (a JSON object), then each ``--set KEY=VALUE`` (VALUE read as YAML) over it."""
    params: Any = {}
    if params_json:
        try:
            params = json.loads(params_json)
        except json.JSONDecodeError as e:
            raise _Refused("--params-json", f"{params_json!r} is not JSON ({e}); give one JSON object, e.g. "
                                            "'{\"seed\": 7}'") from None
        if not isinstance(params, dict):
            raise _Refused("--params-json", f"{params_json!r} is not a JSON object; give one, e.g. '{{\"seed\": 7}}'")
    for k, v in _pairs(sets, "--set", "seed=7").items():
        try:
            params[k] = yaml.safe_load(v)
        except yaml.YAMLError as e:
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise _Refused("--set", f"{k}={v!r}: the value is not YAML ({problem}); quote text, e.g. "
                                    f"--set {k}='\"...\"'") from None
    return params  # each value is checked by the stage's Params (inf and nan refused there)


def _same_path(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except (RuntimeError, OSError):  # a symlink loop: compared as written
        return os.path.abspath(a) == os.path.abspath(b)


def check_out(out: Path, inputs: list[tuple[str | None, Path]]) -> None:
    """The output must not be one of the inputs (the stage would replace what it reads), and its folder must be
    one this process can make and write (its lock and partial go beside it)."""
    for port, path in inputs:
        if _same_path(out, path):
            given = f"{port}={path}" if port else str(path)
            raise _Refused("--out", f"{str(out)!r} is also an input (--in {given}): the stage would replace what it "
                                    "reads; give another output path")
    try:
        real = out.resolve()
    except (RuntimeError, OSError) as e:  # a symlink loop
        raise _Refused("--out", f"{str(out)!r} cannot be followed ({e}); give another output path") from None
    above = real.parent
    while not above.exists() and above != above.parent:
        above = above.parent
    if not above.is_dir():
        raise _Refused("--out", f"{str(out)!r} cannot be made: {above} is a file, not a folder; give another path")
    if not os.access(above, os.W_OK | os.X_OK):
        raise _Refused("--out", f"{str(out)!r} cannot be written: {above} is not writable; give another path")


def check_out_kind(stage: StageDef, out: Path) -> None:
    """Only what this stage writes is ever replaced at ``out``: an artifact stage never replaces a user's file or a
    folder that is not an artifact, a file stage (export, preview) never a folder."""
    if stage.output_kind is None:
        if out.is_dir():
            raise _Refused("--out", f"{str(out)!r} is a folder; {stage.name} writes a file: give its path")
    elif out.exists() and not out.is_dir():
        raise _Refused("--out", f"{str(out)!r} is a file, not an artifact: it is left alone; give a new path "
                                f"(e.g. {out.with_suffix('.zarr').name}) for the {stage.output_kind} artifact")
    elif out.is_dir() and any(out.iterdir()) and not (out / "zarr.json").is_file():
        raise _Refused("--out", f"{str(out)!r} is a folder that holds no artifact: it is left alone; give a new path "
                                f"for the {stage.output_kind} artifact")


def _peak_bytes() -> int:
    """This process's peak resident memory (ru_maxrss: kilobytes on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _size(n: int) -> str:
    return f"{n / 2**30:.2f} GB" if n >= 2**30 // 10 else f"{n / 2**20:.0f} MB"


def summary(name: str, out: Path, code: int, reused: bool) -> str:
    """The one line a stage prints when it ends: what it wrote or reused, its wall time and peak memory."""
    wall = time.time() - psutil.Process().create_time()  # from the process start: imports included
    what = (f"reused {out} (already made with this key)" if reused else f"wrote {out}") if code == 0 \
        else f"failed (exit {code}); {out} not written"
    return f"{name}: {what}; {wall:.1f} s, peak {_size(_peak_bytes())}"


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
    name: str = typer.Argument(None, help="the stage: text-encode, image-encode, video-encode, audio-encode, denoise, "
                                          "upscale, temporal-upscale, refine, decode, vocode, soundtrack, export, "
                                          "preview"),
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
    recompute: bool = typer.Option(False, "--recompute/--reuse", metavar="",
                                   help="compute even when --out is already made with this key (replaced once the "
                                        "new output is complete); --reuse: keep it"),
    show_help: bool = typer.Option(False, "--help", "-h", is_eager=True, metavar="",
                                   help="show this, and with NAME the stage's ports and parameters"),
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
    try:
        if out is None:
            raise _Refused("--out", "missing; give the output path (.zarr, or the file for export / preview)")
        given = _inputs(inputs)
        check_out(out, given)
        params = parse_params(params_json, sets)
        w = {k: Path(v).expanduser() for k, v in _pairs(weights, "--weights", "checkpoint=PATH").items()}
        try:
            budget_bytes = parse_memory_size(budget) if budget else None
        except ValueError:
            raise _Refused("--budget", f"{budget!r} is not a memory size; write e.g. 10GB, 800MB or a number of "
                                       "bytes") from None
        if progress_fd is not None:
            try:
                os.fstat(progress_fd)
            except OSError:
                raise _Refused("--progress-fd", f"{progress_fd} is not an open file descriptor; leave it out "
                                                "(`ltx2 run` passes it)") from None
    except _Refused as e:
        console.print(f"[red]error:[/] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    reexec_with_optimized_blas()  # done already when started through cli/stage_entry.py
    try:
        check_out_kind(stage_def(name), out)  # after the re-exec: it imports the stage's module
    except _Refused as e:
        console.print(f"[red]error:[/] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except BadInputError:
        pass  # an unknown stage: execute() says so, with the stages there are
    outcome: dict[str, Any] = {}
    code = execute(name, given, out, params, w or None, cache_key, budget_bytes, progress_fd, recompute, outcome)
    print(summary(name, out, code, bool(outcome.get("reused"))), flush=True)
    raise typer.Exit(code)
