"""`ltx2 run JOB.yaml`: render a job to an mp4, reusing every cached stage and resuming a killed one."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def load_job_or_exit(path: Path, console: Console):
    from ltx2.orchestrator.job import JobError, load_job

    try:
        return load_job(path)
    except JobError as e:
        console.print(f"[red]{e}[/]")
        raise typer.Exit(2) from None


def _gb(n: int | None) -> str:
    if not n:
        return "-"
    return f"{n / 2**30:.2f} GB" if n >= 2**30 // 10 else f"{n / 2**20:.0f} MB"


def run(
    job_file: Path = typer.Argument(..., help="the job (YAML); see examples/tiny.yaml"),
    force: list[str] = typer.Option([], "--force", help="recompute this stage (and what depends on it); repeatable"),
) -> None:
    """Render JOB_FILE to its mp4 (H.264 + AAC), one process per stage."""
    from ltx2.orchestrator.execute import RunFailed, run_job

    console = Console()
    job = load_job_or_exit(job_file, console)
    frames = f"{job.frames} frames at {job.fps:g} fps" + (
        f" -> {job.output_frames} at {job.output_fps:g} (temporal upscale)" if job.temporal_upscale else "")
    console.print(f"[bold]{job_file}[/]: {job.pipeline}, {job.width}x{job.height}, {frames}, seed {job.seed}, model "
                  f"{f'{job.tiny_model} (random weights: the video is noise)' if job.tiny_model else 'real weights'}")
    with Progress(TextColumn("{task.description:<12}"), BarColumn(bar_width=30), MofNCompleteColumn(),
                  TimeElapsedColumn(), TextColumn("{task.fields[note]}"), console=console) as bars:
        tasks: dict[str, int] = {}

        def on_stage(name: str, state: str, info: dict) -> None:
            if name not in tasks:
                tasks[name] = bars.add_task(name, total=None, note="", start=state == "running")
            tid = tasks[name]
            if state == "reused":
                bars.update(tid, total=1, completed=1, note="[cyan]reused (cached)[/]")
            elif state == "running":
                bars.start_task(tid)
                bars.update(tid, note=f"running ({info.get('why', '')})")
            elif state == "done":
                bars.update(tid, total=bars.tasks[tid].total or 1, completed=bars.tasks[tid].total or 1,
                            note=f"[green]done[/] {info['wall_s']:.1f} s, peak {_gb(info['peak_rss'])}"
                                 f" (est. {_gb(info.get('estimated'))})"
                                 + (f", {info['choice']}" if info.get("choice") else "")
                                 + (f", streaming {info['streaming']['s_per_step']:.1f} s/step"
                                    if (info.get("streaming") or {}).get("s_per_step") is not None else "")
                                 + (f", {info['note']}" if info.get("note") else ""))
                bars.stop_task(tid)
            elif state == "failed":
                bars.update(tid, note=f"[red]failed (exit {info['code']})[/]")
                bars.stop_task(tid)

        def on_event(ev: dict) -> None:
            tid = tasks.get(ev.get("stage"))
            if tid is None:
                return
            if ev.get("event") == "step":
                bars.update(tid, total=ev["total"], completed=ev["done"])
            elif ev.get("event") == "resumed":
                bars.update(tid, note=f"resumed at step {ev['step']} of {ev['total']}")

        try:
            manifest = run_job(job, str(job_file), set(force), on_stage, on_event)
        except RunFailed as e:
            console.print(f"[red]error:[/] {e}")
            console.print(f"nothing finished is lost: run the same command again to continue "
                          f"(logs in {Path(job.work_dir) / 'logs'})")
            raise typer.Exit(1 if e.code not in (2, 75) else e.code) from None
        except ValueError as e:
            console.print(f"[red]error:[/] {e}")
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            console.print("interrupted: finished stages are kept and a half-done denoise, refine or decode "
                          "continues from its last checkpoint when you run the same command again")
            raise typer.Exit(130) from None
    reused = sum(s.status == "reused" for s in manifest.stages)
    console.print(f"wrote [bold]{job.output}[/] ({reused} of {len(manifest.stages)} stages reused; "
                  f"manifest {Path(job.work_dir) / 'manifest.json'}; artifacts in {manifest.store})")
