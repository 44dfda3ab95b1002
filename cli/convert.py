"""`ltx2 convert`: the official files -> per-stage MLX weight files, optionally 8- or 4-bit quantised."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table


def _size(n: int) -> str:
    return f"{n / 2**30:.2f} GB" if n >= 2**30 // 10 else f"{n / 2**20:.1f} MB"


def convert(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="the official single-file LTX-2 checkpoint"),
    out: Path = typer.Option(..., "--out", help="folder for the converted files (new, or empty, or --force)"),
    gemma: Path | None = typer.Option(None, "--gemma", help="the Gemma-3 folder: adds Gemma to text.safetensors"),
    upsampler: Path | None = typer.Option(None, "--upsampler", help="a latent upsampler file to convert too"),
    lora: list[str] = typer.Option([], "--lora", help="FILE:STRENGTH fused into the transformer (repeatable)"),
    bits: int | None = typer.Option(None, "--bits", help="8 or 4: quantise the transformer and text encoder"),
    group_size: int = typer.Option(64, "--group-size", help="inputs per quantisation scale/bias: 32, 64 or 128"),
    parts: str | None = typer.Option(None, "--parts", help="comma list of transformer, text, video_decoder, "
                                     "video_encoder, audio, upsampler (default: all but video_encoder)"),
    dtype: str = typer.Option("auto", "--dtype", help="float tensors: auto (as the source), bfloat16, float32"),
    quantize_embeddings: bool = typer.Option(False, "--quantize-embeddings",
                                             help="also quantise Gemma's token embedding table"),
    force: bool = typer.Option(False, "--force", help="write into a non-empty --out folder"),
) -> None:
    """Write per-stage weight files (MLX layouts, optionally quantised) that the stages load directly.

    One component at a time, the transformer and Gemma one block at a time: peak memory stays near one
    block. Point a stage's weights at the files listed in OUT/manifest.json."""
    # lazy: every network (and zarr) load here, not when the CLI starts
    from ltx2.models.weights.conversion import convert_checkpoint, parse_lora

    console = Console(width=140, stderr=False)
    files = [p.strip() for p in parts.split(",") if p.strip()] if parts else None
    try:
        manifest, reports = convert_checkpoint(
            checkpoint, out, gemma=gemma, upsampler=upsampler, loras=[parse_lora(s) for s in lora], bits=bits,
            group_size=group_size, files=files, dtype=dtype, quantize_embeddings=quantize_embeddings, force=force,
            log=lambda s: console.print(f"[dim]{s}[/]"))
    except ValueError as e:  # ConvertError, CheckpointError (bad input) and mlx's own refusals
        console.print(f"[red]ltx2 convert:[/] {e}")
        raise typer.Exit(2) from None
    title = f"{out}: {'float' if bits is None else f'{bits}-bit, group {group_size}'}"
    if manifest["loras"]:
        title += ", LoRAs fused: " + ", ".join(f"{Path(r['file']).name} x {r['strength']:g}" for r in manifest["loras"])
    table = Table(title=title)
    for col in ("file", "parts", "before", "after", "ratio", "quantised layers", "floats"):
        table.add_column(col)
    for r in reports:
        table.add_row(r.name, ", ".join(r.parts), _size(r.source_bytes), _size(r.bytes),
                      f"{r.bytes / r.source_bytes:.2f}" if r.source_bytes else "-",
                      ", ".join(f"{p} {n}" for p, n in r.quantized_layers.items() if n) or "-", r.dtype)
    console.print(table)
    console.print(f"roles -> files: {out / 'manifest.json'}")
