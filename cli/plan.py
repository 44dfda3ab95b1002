"""`ltx2 plan JOB.yaml`: the stage graph, what is cached, what will run, and each stage's memory choice.

Per stage: the memory planner's choice (weights precision and streaming for text-encode / denoise /
refine, the tiling for decode), the compute precision of a stage that runs a network (the job's ``compute``,
``auto`` resolved), the estimated peak under both, whether it fits the budget (in red with
the budget it would need when it does not), and for streamed stages the extra time per step the
streaming costs (measured by the last run of that stage with the same choice, else estimated).
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from ltx2.cli.run import _gb, check_work_dir, load_job_or_exit, refuse
from ltx2.models.tiny import ensure_tiny_model
from ltx2.orchestrator.graph import plan_keys
from ltx2.orchestrator.job import parse_memory_size, write_problems
from ltx2.orchestrator.planner import plan_job
from ltx2.orchestrator.recipes import resolved_compute
from ltx2.orchestrator.store import open_store, reuse_state
from ltx2.spec.errors import BadInputError


def plan(job_file: Path = typer.Argument(..., help="the job (YAML)"),
         budget: str = typer.Option(None, "--budget", help="plan for this memory budget instead of the job's "
                                                           "memory_budget, e.g. 16GB")) -> None:
    """Show what `ltx2 run JOB_FILE` would do, without running anything. Exit 75 when a stage that
    would run cannot fit the budget in any way."""
    console = Console(width=200)
    job = load_job_or_exit(job_file, console)
    try:
        budget_bytes = parse_memory_size(budget) if budget else None
    except ValueError:
        refuse(console, [f"--budget: {budget!r} is not a memory size; write e.g. 16GB, 800MB or a number of bytes"])
    check_work_dir(job, job_file, console)
    try:
        if job.tiny_model:
            ensure_tiny_model(variant=job.tiny_model)
    except BadInputError as e:
        refuse(console, [str(e)])
    job_plan = plan_job(job, budget_bytes)
    if job_plan.bad_inputs:  # a refused config or input: nothing can run, whatever the budget
        refuse(console, [p.bad_input if p.bad_input.startswith(p.name) else f"{p.name}: {p.bad_input}"
                         for p in job_plan.bad_inputs])
    stages = job_plan.stages
    keys = plan_keys(stages)
    work = Path(job.work_dir)
    store = open_store(job)
    frames = f"{job.frames}" + (f" -> {job.output_frames} at {job.output_fps:g} fps" if job.temporal_upscale else "")
    compute = resolved_compute(job) + (" (auto)" if job.compute == "auto" else "")
    table = Table(title=f"{job_file}: {job.pipeline} pipeline, {job.width}x{job.height}x{frames}, "
                        f"budget {_gb(job_plan.budget)} per stage, compute {compute}")
    for col in ("stage", "reads", "writes", "key", "state", "choice", "compute", "est. peak", "fits",
                "streaming cost"):
        table.add_column(col)
    will_run: set[str] = set()
    refused = []
    for st in stages:
        out = st.output_path(work)
        ok, why = reuse_state(store, st, work, keys[st.name])
        upstream = any(i in {s.output for s in stages if s.name in will_run} for i in st.inputs)
        if ok and not upstream:
            state = "[cyan]cached[/]"
        else:
            will_run.add(st.name)
            state = "[yellow]will run[/]" + (f" ({why})" if why and not upstream else " (input changes)")
        p = job_plan.plans[st.name]
        if p.estimate is None:
            mem, fits = (f"? ({p.note})" if p.note else "-"), ""
        else:
            mem = _gb(p.total)
            fits = "[green]yes[/]" if p.fits else f"[red]no: needs >= {_gb(p.need) if p.need else '?'}[/]"
            if not p.fits and st.name in will_run:
                refused.append(p)
        stream = ""
        if p.stream_s_per_step is not None:
            per = "pass" if st.name == "text-encode" else "step"
            stream = (f"+{p.stream_s_per_step:.1f} s/{per} "
                      f"({'measured' if p.stream_measured else 'est.'}; {_gb(p.stream_bytes_per_pass)} read/pass)")
        table.add_row(st.name, ", ".join(st.inputs) or "-", st.output if st.name != "export" else str(out),
                      keys[st.name][:12], state, p.label, st.params.key_material().get("compute", "-"), mem, fits,
                      stream)
    console.print(table)
    console.print(f"{len(will_run)} of {len(stages)} stages will run; output {job.output}")
    for line in write_problems(job, store.root) if will_run else []:  # `ltx2 run` refuses these before anything
        console.print(f"[red]cannot run:[/] {line}", highlight=False, soft_wrap=True)
    for p in refused:
        console.print(f"[red]{p.name} does not fit:[/] {p.note}")
    if refused:
        raise typer.Exit(75)
