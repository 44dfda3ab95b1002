"""`ltx2 inspect X.zarr`: an artifact's kind, schema, producer, parameters, arrays and hash status."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table


def inspect(path: Path = typer.Argument(..., help="an artifact folder (NAME.zarr, or NAME.zarr.partial)"),
            as_json: bool = typer.Option(False, "--json", help="print the summary as JSON")) -> None:
    """Describe an artifact and verify its hashes (exit 1 if it is partial, invalid or corrupted)."""
    from ltx2.artifacts_schema import summarize  # lazy: zarr loads for `ltx2 inspect` only, not at CLI start

    s = summarize(path, verify=True)
    if as_json:
        typer.echo(json.dumps(s.to_dict(), indent=1, default=str))
    else:
        console = Console(width=160)
        d = s.to_dict()
        for k in ("path", "state", "problem", "kind", "schema_version", "producer", "cache_key", "input_keys",
                  "params", "facts", "hashes", "progress"):
            if d.get(k) not in (None, {}, ""):
                console.print(f"[bold]{k}[/]: {d[k]}")
        t = Table("array", "shape", "logical dtype", "chunks", "bytes", "sha256")
        for a in d.get("arrays", []):
            t.add_row(a["name"], str(tuple(a["shape"])), a["logical_dtype"], str(tuple(a.get("chunks") or ())),
                      str(a["nbytes"]), (a["sha256"] or "")[:16])
        console.print(t)
    if s.state != "complete" or s.problem or s.hashes.startswith("mismatch"):
        raise typer.Exit(1)
