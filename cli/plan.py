"""`ltx2 plan JOB.yaml`: the stage graph, what is cached, what will run, and each stage's memory estimate."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from ltx2.cli.run import _gb, load_job_or_exit


def plan(job_file: Path = typer.Argument(..., help="the job (YAML)")) -> None:
    """Show what `ltx2 run JOB_FILE` would do, without running anything."""
    from ltx2.orchestrator.cache_keys import plan_keys
    from ltx2.orchestrator.execute import cached_state
    from ltx2.orchestrator.graph import plan_stages
    from ltx2.orchestrator.predict import predict
    from ltx2.stages.base import StageContext, open_inputs, resolve_weights, stage_module  # noqa: F401
    from ltx2.stages.contract import Progress, StageError

    console = Console(width=160)
    job = load_job_or_exit(job_file, console)
    if job.model == "tiny":
        from ltx2.models.tiny import ensure_tiny_model

        ensure_tiny_model()
    stages = plan_stages(job)
    keys = plan_keys(stages)
    from ltx2.models.weights import read_header

    ckpt_cfg = read_header(job.weight_files()["checkpoint"]).config()
    predicted = predict(job, stages, ckpt_cfg)
    work = Path(job.work_dir)
    table = Table(title=f"{job_file}: {job.pipeline} pipeline, budget {_gb(job.memory_budget)} per stage")
    for col in ("stage", "reads", "writes", "key", "state", "est. peak memory"):
        table.add_column(col)
    will_run: set[str] = set()
    for st in stages:
        out = st.output_path(work)
        ok, why = cached_state(st, out, keys[st.name])
        upstream = any(i in {s.output for s in stages if s.name in will_run} for i in st.inputs)
        if ok and not upstream:
            state = "[cyan]cached[/]"
        else:
            will_run.add(st.name)
            state = "[yellow]will run[/]" + (f" ({why})" if why and not upstream else " (input changes)")
        mod = stage_module(st.name)
        try:
            inputs = {predicted[i].kind: predicted[i] for i in st.inputs}
            ctx = StageContext(mod.SPEC, inputs, out, mod.resolve_params(inputs, dict(st.params)),
                               {r: Path(p) for r, p in st.weights.items()}, keys[st.name], job.memory_budget,
                               Progress(st.name, None))
            est = mod.estimate(ctx)
            over = est.total > job.memory_budget
            mem = f"{'[red]' if over else ''}{_gb(est.total)}{' over budget[/]' if over else ''}"
        except (StageError, KeyError, ValueError) as e:
            mem = f"? ({e})"
        table.add_row(st.name, ", ".join(st.inputs) or "-", st.output if st.name != "export" else str(out),
                      keys[st.name][:12], state, mem)
    console.print(table)
    console.print(f"{len(will_run)} of {len(stages)} stages will run; output {job.output}")
