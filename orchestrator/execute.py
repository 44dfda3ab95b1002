"""Running a job: plan, reuse what is stored, run the rest as stage processes, record a manifest.

Every stage output lives in the content-addressed store under its cache key (see ``store``); the work
folder holds named links to what the run used, its logs and ``manifest.json``. The stages run through an
:class:`~.executor.Executor` (by default this machine's processes) as the scheduler (``scheduler``)
lets them: as soon as their inputs exist, several at once when the memory budget holds them all.

Every store entry is locked while it is checked or computed, so two `ltx2 run` (of one job or of two
that share a stage) never write the same artifact: the second waits, then finds it made and reuses it.
A stored artifact is reused only if it opens, verifies (hashes) and carries the planned key; anything
else is recomputed. A partial left by a killed denoise/refine/decode is continued by the stage itself.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ltx2.models.tiny import ensure_tiny_model
from ltx2.spec.errors import EXIT_BAD_INPUT, EXIT_BUG, EXIT_DOES_NOT_FIT, Ltx2Error

from .executor import Executor, LocalExecutor, StageInvocation, StageRun
from .graph import Stage, plan_keys
from .job import Job
from .planner import plan_job
from .scheduler import Outcome, Task, run_dag
from .store import claim, entry_path, open_store, publish, reuse_state

__all__ = ["StageRecord", "RunManifest", "RunFailed", "run_job", "dependents", "stage_args"]


@dataclass
class StageRecord:
    name: str
    key: str
    status: str  # "reused" | "computed" | "failed"
    wall_s: float = 0.0
    peak_rss: int = 0
    estimated_bytes: int | None = None
    note: str = ""
    run_s: float | None = None  # inside the stage's run(): model compute plus artifact I/O
    io_s: float | None = None  # artifact reads and writes within run()
    choice: dict | None = None  # what the memory planner chose (weights_mode / tiling), as in the stage's params
    choice_label: str = ""
    streaming: dict | None = None  # streamed weights: load seconds, passes, steps, seconds per step (measured)
    started: float | None = None  # seconds since the run began when the stage was started (None: not run)
    ended: float | None = None  # seconds since the run began when it was seen finished


@dataclass
class RunManifest:
    job: str
    output: str
    stages: list[StageRecord] = field(default_factory=list)  # in plan order
    store: str = ""  # the store folder the keys live in
    keys: dict[str, str] = field(default_factory=dict)  # every planned stage -> its key (what `ltx2 gc` keeps)
    started_at: float | None = None  # the run's start, seconds since the epoch (stage times count from it)

    def write(self, path: Path) -> None:
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # two runs on one folder: no shared temp
        tmp.write_text(json.dumps({"job": self.job, "output": self.output, "store": self.store,
                                   "started_at": self.started_at, "keys": self.keys,
                                   "stages": [asdict(s) for s in self.stages]}, indent=1))
        tmp.replace(path)


class RunFailed(Ltx2Error):
    """A stage failed (or could not fit): ``code`` is its exit code, and the exit code `ltx2 run` passes on
    when it is bad input (2) or does not fit (75); anything else is 1."""

    def __init__(self, stage: str, message: str, code: int, manifest: RunManifest):
        super().__init__(message)
        self.stage, self.code, self.manifest = stage, code, manifest
        self.exit_code = code if code in (EXIT_BAD_INPUT, EXIT_DOES_NOT_FIT) else EXIT_BUG


def dependents(stages: list[Stage], names: set[str]) -> set[str]:
    """``names`` and every stage that reads, directly or not, what they write."""
    out = set(names)
    produced = {s.output for s in stages if s.name in out}
    for s in stages:  # stages are in dependency order
        if s.name not in out and any(i in produced for i in s.inputs):
            out.add(s.name)
            produced.add(s.output)
    return out


def stage_args(stage: Stage, out: Path, inputs: dict[str, Path], key: str, budget: int,
               recompute: bool = False) -> list[str]:
    """`ltx2 stage NAME` arguments: its output and input paths (store entries, inputs by artifact name, given
    to their ports), key, budget, params, weights; ``recompute`` (forced): replace a finished output."""
    args = ["--out", str(out), "--cache-key", key, "--budget", str(budget),
            "--params-json", json.dumps(stage.params.key_material())] + (["--recompute"] if recompute else [])
    for port, names in stage.ports.items():
        for name in (names if isinstance(names, tuple) else (names,)):
            args += ["--in", f"{port}={inputs[name]}"]
    for role, path in stage.weights.items():
        args += ["--weights", f"{role}={path}"]
    return args


def _record(st: Stage, key: str, plan, run: StageRun, out: Outcome) -> StageRecord:
    plan_ev = next((e for e in run.events if e.get("event") == "plan"), {})
    est = sum(plan_ev.get(k, 0) for k in ("weights_bytes", "activations_bytes", "baseline_bytes")) \
        if plan_ev else None
    resumed = next((e for e in run.events if e.get("event") == "resumed"), None)
    note = run.message or (f"resumed at step {resumed['step']} of {resumed['total']}" if resumed else "")
    done = next((e for e in run.events if e.get("event") == "done"), {})
    status = "failed" if not run.ok else "reused" if done.get("reused") else "computed"
    if done.get("reused"):
        note = "made meanwhile by another run"
    rec = StageRecord(st.name, key, status, round(run.wall_s, 3), run.peak_rss, est, note)
    rec.run_s, rec.io_s = done.get("run_s"), done.get("io_s")
    rec.choice, rec.choice_label = plan.choice or None, plan.label if plan.choice else ""
    stream = next((e for e in run.events if e.get("event") == "streaming"), None)
    if stream:
        rec.streaming = {k: stream.get(k) for k in ("load_s", "passes", "blocks", "bytes_read", "steps",
                                                    "s_per_step")}
    rec.started = None if out.started is None else round(out.started, 6)
    rec.ended = None if out.ended is None else round(out.ended, 6)
    return rec


def run_job(job: Job, job_name: str, force: set[str] = frozenset(),
            on_stage: Callable[[str, str, dict], None] | None = None,
            on_event: Callable[[dict], None] | None = None,
            executor: Executor | None = None) -> RunManifest:
    """Run ``job``; ``on_stage(name, state, info)`` reports reused / running / done / failed.

    Stages run on ``executor`` (default: :class:`LocalExecutor`, this machine's processes)."""
    t_begin = time.monotonic()
    if job.tiny_model:
        ensure_tiny_model(variant=job.tiny_model)
    job_plan = plan_job(job)  # the memory planner's choices are part of each stage's params (and key)
    stages = job_plan.stages
    unknown = force - {s.name for s in stages}
    if unknown:
        raise ValueError(f"--force {', '.join(sorted(unknown))}: this job's stages are "
                         f"{', '.join(s.name for s in stages)}")
    keys = plan_keys(stages)
    forced = dependents(stages, set(force))
    work = Path(job.work_dir)
    store = open_store(job)
    manifest = RunManifest(job_name, str(job.output), store=str(store.root), keys=dict(keys), started_at=time.time())
    report = on_stage or (lambda *a: None)
    # refuse before running anything: a bad input or refused config found while planning (exit 2), or a stage
    # that has to run and cannot fit its budget in any way (exit 75)
    for p in job_plan.bad_inputs:
        report(p.name, "failed", {"message": p.bad_input, "code": 2})
        raise RunFailed(p.name, p.bad_input, 2, manifest)
    for st in stages:
        p = job_plan.plans[st.name]
        if not p.fits and (st.name in forced or not reuse_state(store, st, work, keys[st.name])[0]):
            msg = f"{st.name} does not fit the {job_plan.budget / 2**30:.2f} GB memory budget: {p.note}"
            report(st.name, "failed", {"message": msg, "code": 75})
            raise RunFailed(st.name, msg, 75, manifest)
    work.mkdir(parents=True, exist_ok=True)
    store.register(work)  # `ltx2 gc` keeps what this work folder's manifest names
    order = {st.name: i for i, st in enumerate(stages)}
    by_name = {st.name: st for st in stages}
    producer = {st.output: st.name for st in stages}
    records: dict[str, StageRecord] = {}
    why_running: dict[str, str] = {}

    def save() -> None:
        manifest.stages = sorted(records.values(), key=lambda r: order[r.name])
        manifest.write(work / "manifest.json")

    save()  # the planned keys are on record before anything runs: a concurrent gc keeps them

    def prepare(st: Stage) -> StageInvocation | None:
        key, plan = keys[st.name], job_plan.plans[st.name]
        c = claim(store, st, work, key, st.name in forced)
        if c.reused:
            records[st.name] = StageRecord(st.name, key, "reused", note=c.why, choice=plan.choice or None,
                                           choice_label=plan.label if plan.choice else "")
            save()
            report(st.name, "reused", {})
            return None
        why_running[st.name] = "forced" if st.name in forced else c.why
        inputs = {i: entry_path(store, by_name[producer[i]], keys[producer[i]]) if i in producer else work / i
                  for i in st.inputs}
        args = stage_args(st, entry_path(store, st, key), inputs, key, job.memory_budget, st.name in forced)
        return StageInvocation(st.stage, tuple(args), work / "logs" / f"{st.name}.log",
                               budget_bytes=job.memory_budget, requirement=plan.total)

    def started(task: Task, inv: StageInvocation) -> None:
        report(task.name, "running", {"why": why_running[task.name]})

    def finished(task: Task, out: Outcome) -> None:
        if out.run is None:
            return  # reused: recorded by prepare()
        st, key = by_name[task.name], keys[task.name]
        rec = _record(st, key, job_plan.plans[st.name], out.run, out)
        if out.run.ok and not entry_path(store, st, key).exists():
            rec.status, rec.note = "failed", f"{st.name} ended without writing {entry_path(store, st, key)}"
            out.run.returncode, out.run.message = 1, rec.note
        if rec.status != "failed":
            publish(store, st, work, key)
        records[st.name] = rec
        save()
        if rec.status == "failed":
            report(st.name, "failed", {"message": out.run.message, "code": out.run.returncode})
        else:
            report(st.name, "done", {"wall_s": rec.wall_s, "peak_rss": rec.peak_rss, "estimated": rec.estimated_bytes,
                                     "note": rec.note, "choice": rec.choice_label, "streaming": rec.streaming})

    tasks = [Task(st.name, tuple(producer[i] for i in st.inputs if i in producer), lambda st=st: prepare(st))
             for st in stages]
    result = run_dag(tasks, job_plan.budget, executor or LocalExecutor(), on_start=started, on_finish=finished,
                     on_event=on_event, clock=lambda: time.monotonic() - t_begin)
    save()
    if result.failed is not None:
        run = result.failed.run
        raise RunFailed(result.failed.name, run.message, run.returncode, manifest)
    return manifest
