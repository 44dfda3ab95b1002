"""`ltx2 weights check FILE_OR_FOLDER...`: what each weight file is, from its headers alone.

Per file: its kind (single-file checkpoint and the components it holds, latent upsampler, LoRA, Gemma folder,
converted file), stored dtypes, size, which stage reads which part, and every problem found (truncated
tensors, missing shards or tokenizer, an unexpected layout, an LTX-2.3 config). Files given together are also
checked against each other (a LoRA against the checkpoint, the Gemma folder and the upsampler against the
checkpoint's widths). Exit status 1 when any problem is found. Nothing is loaded: a 43 GB checkpoint takes
milliseconds.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from ltx2.models.weights import read_header
from ltx2.models.weights.identify import (CHECKPOINT, GEMMA, LORA, UNREADABLE, UPSAMPLER, FileReport, Readers, gb,
                                          identify, lora_fit_problems, looks_like_gemma_folder)
from ltx2.spec.layout import TEXT_PROJECTION, TRANSFORMER

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Inspect weight files (headers only): what they are and whether they are complete.")


def readers() -> Readers:
    """Which stages read a part: the stage registry's answer, listed in the order the pipelines run them."""
    # lazy: the recipes and the registry load every stage module (zarr, PyAV, Pillow); `ltx2` starts without them
    from ltx2.orchestrator.recipes import stage_order
    from ltx2.stages.registry import readers_of

    return partial(readers_of, order=stage_order())


def expand(paths: list[Path]) -> list[Path]:
    """Files and Gemma folders to check: a folder that is not a Gemma folder stands for the .safetensors files
    and Gemma folders directly inside it."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir() and not looks_like_gemma_folder(p):
            inside = sorted(q for q in p.iterdir() if q.suffix == ".safetensors" and q.is_file())
            inside += sorted(q for q in p.iterdir() if looks_like_gemma_folder(q))
            out.extend(inside or [p])
        else:
            out.append(p)
    return out


def _dtypes(counts) -> str:
    return ", ".join(f"{k} x{n}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1])) or "-"


def cross_check(reports: list[FileReport]) -> None:
    """Problems that only show with several files: each added to the report it concerns."""
    ckpts = [r for r in reports if r.kind == CHECKPOINT and not any(p.startswith("truncated") for p in r.problems)]
    for ck in ckpts:
        h = read_header(ck.path)
        for r in reports:
            if r.kind == LORA and r.ok:
                r.problems += [f"against {ck.path.name}: {p}" for p in lora_fit_problems(r.path, ck.path)]
            elif r.kind == UPSAMPLER and r.ok:
                key = TRANSFORMER + "patchify_proj.weight"
                want = h.tensors[key].shape[1] if key in h.tensors else None
                got = _in_channels(r)
                if want is not None and got is not None and want != got:
                    r.problems.append(f"against {ck.path.name}: upsamples {got}-channel latents, the checkpoint's "
                                      f"video latents have {want} channels")
            elif r.kind == GEMMA and r.info.get("hidden_size"):
                proj = h.tensors.get(TEXT_PROJECTION + "aggregate_embed.weight")
                hid, layers = r.info["hidden_size"], r.info.get("num_layers")
                if proj is not None and layers is not None and proj.shape[1] != hid * (layers + 1):
                    r.problems.append(f"against {ck.path.name}: its text projection takes {proj.shape[1]} features, "
                                      f"this Gemma gives {layers + 1} hidden states x {hid} = {hid * (layers + 1)}")


def _in_channels(rep: FileReport) -> int | None:
    try:
        return int(read_header(rep.path).config().get("in_channels", 128))
    except (ValueError, TypeError, json.JSONDecodeError):
        return None


def show(console: Console, rep: FileReport) -> None:
    colour = "green" if rep.ok else "red"
    console.print(f"\n[bold]{rep.path}[/]  [{colour}]{rep.kind}[/]  {gb(rep.size)}")
    console.print(f"  {rep.title}")
    if rep.parts:
        t = Table(show_header=True, header_style="bold", box=None, padding=(0, 2))
        for col in ("part", "tensors", "stored as", "size", "read by"):
            t.add_column(col, justify="right" if col in ("tensors", "size") else "left")
        for p in rep.parts:
            t.add_row(p.name, str(p.tensors), _dtypes(p.dtypes), gb(p.nbytes),
                      ", ".join(p.readers) or "[dim]no stage[/]")
        console.print(t)
    for f in rep.facts:
        console.print(f"  [dim]-[/] {f}")
    for p in rep.problems:
        console.print(f"  [red]problem:[/] {p}")


@app.command("check")
def check(paths: list[Path] = typer.Argument(..., help="weight files and/or folders (a Gemma folder, or a folder "
                                                         "of .safetensors files)")) -> None:
    """Say what each weight file is and whether it is complete, reading headers only. Exit 1 on any problem."""
    console = Console(width=160)
    stages = readers()
    reports = [identify(p, readers=stages) if p.exists() else
               FileReport(p, UNREADABLE, "does not exist", problems=["no such file or folder"]) for p in expand(paths)]
    cross_check(reports)
    for rep in reports:
        show(console, rep)
    summary = Table(title="weights check", show_lines=False)
    for col in ("file", "kind", "size", "stored dtypes", "problems"):
        summary.add_column(col)
    for rep in reports:
        summary.add_row(rep.path.name or str(rep.path), rep.kind, gb(rep.size), _dtypes(rep.dtypes),
                        "[green]none[/]" if rep.ok else f"[red]{len(rep.problems)}[/]")
    console.print()
    console.print(summary)
    bad = [r for r in reports if not r.ok]
    if bad:
        console.print(f"[red]{len(bad)} of {len(reports)} files have problems[/]")
        raise typer.Exit(1)
    console.print(f"[green]{len(reports)} file{'s' if len(reports) != 1 else ''}: no problems[/]")
