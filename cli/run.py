"""`ltx2 run JOB.yaml`: render a job to an mp4, reusing every cached stage and resuming a killed one.

Before anything runs, the job is refused (exit 2, the field, the value and the fix) when it is bad, when its
work folder holds another job's work, or when a folder it must write is not writable (unless its output is
already made: then it says so). After a failure, what it prints depends on whether running again can help:
an interruption or a crash (a signal, an out-of-memory kill) continues where it stopped; bad input, a memory
budget refusal or a bug needs a change first, and it says which.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ltx2.models.tiny import ensure_tiny_model
from ltx2.orchestrator.execute import RunFailed, run_job
from ltx2.orchestrator.graph import plan_keys
from ltx2.orchestrator.job import Job, JobError, load_job, work_dir_holder, write_problems
from ltx2.orchestrator.planner import plan_job
from ltx2.orchestrator.store import cached_state, named_path, store_root
from ltx2.spec.errors import EXIT_BAD_INPUT, EXIT_DOES_NOT_FIT, BadInputError


def load_job_or_exit(path: Path, console: Console) -> Job:
    try:
        return load_job(path)
    except JobError as e:
        console.print(f"[red]{e}[/]", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None


def refuse(console: Console, lines: list[str]) -> None:
    for line in lines:
        console.print(f"[red]error:[/] {line}", highlight=False, soft_wrap=True)
    raise typer.Exit(EXIT_BAD_INPUT)


def check_work_dir(job: Job, job_file: Path, console: Console) -> None:
    """Refuse (exit 2) a work folder that holds another job's work (its manifest names that job)."""
    other = work_dir_holder(job, job_file)
    if other is not None:
        refuse(console, [f"work_dir: {str(job.work_dir)!r} holds the work of another job, {other} (its manifest.json "
                         f"names it, and it names this work_dir); give {job_file.name} its own work_dir, e.g. "
                         f"work_dir: {job_file.stem}.work"])


def output_made(job: Job) -> bool:
    """True when every file this job delivers (the video, the preview) is there, made with this plan's keys:
    nothing needs to run or be written. Changes nothing (for a folder the run could not write)."""
    if job.tiny_model:
        ensure_tiny_model(variant=job.tiny_model)
    job_plan = plan_job(job)
    if job_plan.bad_inputs:
        return False
    keys = plan_keys(job_plan.stages)
    delivered = [st for st in job_plan.stages if st.definition.output_kind is None]
    return bool(delivered) and all(cached_state(st, named_path(st, Path(job.work_dir)), keys[st.name])[0]
                                   for st in delivered)


def _gb(n: int | None) -> str:
    if not n:
        return "-"
    return f"{n / 2**30:.2f} GB" if n >= 2**30 // 10 else f"{n / 2**20:.0f} MB"


def advice(e: RunFailed, job: Job, job_file: Path) -> str:
    """What to do after a failed run: run again only where that can help (an interruption, a crash)."""
    log = Path(job.work_dir) / "logs" / f"{e.stage}.log"
    kept = "finished stages are kept" if e.manifest.stages else "nothing ran"
    if e.code == EXIT_BAD_INPUT:
        return f"running again will not help: change what the error names (in {job_file} or the file it names); {kept}"
    if e.code == EXIT_DOES_NOT_FIT:
        return (f"running again will not help: raise memory_budget in {job_file} (or render fewer frames or pixels), "
                f"then run again; {kept}")
    if e.code < 0:  # killed by a signal: interrupted, or out of memory; a rerun continues where it stopped
        return (f"nothing finished is lost: run the same command again to continue ({kept}; a half-done denoise, "
                f"refine or decode continues from its last checkpoint; log {log})")
    return (f"{e.stage} failed with a bug in ltx2 (exit {e.code}): running again will not help unless the cause "
            f"was outside it (a full disk, a file changed meanwhile); the traceback is in {log}; {kept}")


def run(
    job_file: Path = typer.Argument(..., help="the job (YAML); see examples/tiny.yaml"),
    force: list[str] = typer.Option([], "--force", help="recompute this stage (and what depends on it); repeatable"),
) -> None:
    """Render JOB_FILE to its mp4 (H.264 + AAC), one process per stage."""
    console = Console()
    job = load_job_or_exit(job_file, console)
    try:
        check_work_dir(job, job_file, console)
        unwritable = write_problems(job, store_root(job))
        if unwritable:
            if not force and output_made(job):
                console.print(f"{job.output} is already there, made by this job (every stage cached); nothing to "
                              f"run and nothing written ({unwritable[0].split(';')[0]})", highlight=False,
                              soft_wrap=True)
                return
            refuse(console, unwritable)
    except BadInputError as e:
        refuse(console, [str(e)])
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
            # the manifest records the job file's absolute path: how another job finds out whose work folder it is
            manifest = run_job(job, str(job_file.resolve()), set(force), on_stage, on_event)
        except RunFailed as e:
            message = str(e) if str(e).startswith(e.stage) else f"{e.stage}: {e}"
            console.print(f"[red]error:[/] {message}", highlight=False, soft_wrap=True)
            console.print(advice(e, job, job_file), highlight=False, soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except ValueError as e:  # an unknown --force stage, a tiny model folder that is not one (BadInputError)
            console.print(f"[red]error:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        except KeyboardInterrupt:
            console.print("interrupted: finished stages are kept and a half-done denoise, refine or decode "
                          "continues from its last checkpoint when you run the same command again")
            raise typer.Exit(130) from None
    reused = sum(s.status == "reused" for s in manifest.stages)
    console.print(f"wrote [bold]{job.output}[/] ({reused} of {len(manifest.stages)} stages reused; "
                  f"manifest {Path(job.work_dir) / 'manifest.json'}; artifacts in {manifest.store})")
