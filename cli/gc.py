"""`ltx2 gc [--store DIR] [--dry-run]`: remove store entries no job's manifest references."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console


def _size(n: int) -> str:
    return f"{n / 2**30:.2f} GB" if n >= 2**30 // 10 else f"{n / 2**20:.1f} MB"


def gc(store: Path = typer.Option(None, "--store", help="the store folder (default: $LTX2_STORE, else "
                                                         "~/.cache/ltx2/store)"),
       dry_run: bool = typer.Option(False, "--dry-run", help="list what would be removed, remove nothing")) -> None:
    """Remove every store entry that no registered work folder's manifest.json lists (a work folder is
    registered by each `ltx2 run`; one that no longer exists is forgotten). Entries a running stage holds
    are kept."""
    # lazy: the store modules import zarr and numpy, which every other `ltx2` command would pay for
    from ltx2.artifacts_schema.content_store import ContentStore
    from ltx2.orchestrator.gc import GcError, collect
    from ltx2.orchestrator.store import store_root

    console = Console(soft_wrap=True)  # whole paths, never wrapped
    root = store.expanduser().resolve() if store is not None else store_root()
    if not root.is_dir():
        console.print(f"no store at {root}: nothing to do")
        return
    try:
        report = collect(ContentStore(root), dry_run=dry_run)
    except GcError as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(e.exit_code) from None
    verb = "would remove" if dry_run else "removed"
    for work in report.dropped_refs:
        console.print(f"{'would forget' if dry_run else 'forgot'} {work} (no work folder or manifest there)")
    for item, size in report.removed:
        more = f" and {len(item.paths) - 1} more of its files" if len(item.paths) > 1 else ""
        console.print(f"{verb} {item.paths[0]}{more} ({_size(size)})")
    for item in report.in_use:
        console.print(f"kept {item.paths[0]}: in use by a running stage")
    console.print(f"{root}: {verb} {len(report.removed)} entries ({_size(report.bytes)}); "
                  f"kept {report.kept} referenced, {len(report.in_use)} in use")
