"""`ltx2 parity DIR`: compare every implemented component against the official reference fixtures."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import typer
from rich.console import Console
from rich.table import Table

from ltx2.parity import run_all


def parity(
    directory: Path = typer.Argument(..., help="folder of fixtures written by the oracle's make_fixtures.py"),
    only: list[str] = typer.Option(None, "--only", help="check only these fixture names"),
) -> None:
    """Run each implemented component in float32 on the fixtures in DIR and print relative errors (the *_half
    fixtures, tests/fixtures/half: in float32, bfloat16 and float16, against the official code run in each)."""
    if not directory.is_dir():
        raise typer.BadParameter(f"{directory} is not a folder of fixtures", param_hint="DIR")
    mx.set_default_device(mx.cpu)  # parity is a float32 reference check; CPU is exact enough everywhere
    results = run_all(directory, only or None)
    if not results:
        raise typer.BadParameter(f"{directory} holds no fixtures (*.npz)", param_hint="DIR")
    table = Table(title=f"parity against the official reference: {directory}")
    for col in ("fixture", "output", "rel. error", "tolerance", "result"):
        table.add_column(col)
    style = {"pass": "green", "FAIL": "red", "ERROR": "red", "not implemented": "yellow"}
    for r in results:
        table.add_row(r.fixture, r.output, "-" if r.rel_err is None else f"{r.rel_err:.2e}",
                      "-" if r.tol is None else f"{r.tol:.0e}",
                      f"[{style[r.status]}]{r.status}[/]" + (f" ({r.detail})" if r.detail else ""))
    console = Console(width=160)
    console.print(table)
    failed = [r for r in results if not r.ok]
    passed = sum(r.status == "pass" for r in results)
    console.print(f"{passed} outputs pass, {len(failed)} fail, "
                  f"{len({r.fixture for r in results if r.status == 'not implemented'})} fixtures not implemented")
    if failed:
        raise typer.Exit(1)
