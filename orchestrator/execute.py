"""Running a job: plan, reuse what is cached, run the rest as stage processes, record a manifest.

Every stage output is locked while it is checked or computed, so two `ltx2 run` on one work
folder never write the same artifact: the second waits, then finds it cached and reuses it.
A cached artifact is reused only if it opens, verifies (hashes) and carries the planned key;
anything else is recomputed. A partial left by a killed denoise/refine/decode is continued by the
stage itself.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ltx2.artifacts_schema import ArtifactLock
from ltx2.models.tiny import ensure_tiny_model
from ltx2.stages.base import cached_state as stage_cached_state

from .graph import Stage, plan_keys
from .job import Job
from .planner import plan_job
from .runner import StageRun, run_stage


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


@dataclass
class RunManifest:
    job: str
    output: str
    stages: list[StageRecord] = field(default_factory=list)

    def write(self, path: Path) -> None:
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # two runs on one folder: no shared temp
        tmp.write_text(json.dumps({"job": self.job, "output": self.output,
                                   "stages": [asdict(s) for s in self.stages]}, indent=1))
        tmp.replace(path)


class RunFailed(Exception):
    def __init__(self, stage: str, message: str, code: int, manifest: RunManifest):
        super().__init__(message)
        self.stage, self.code, self.manifest = stage, code, manifest


def cached_state(stage: Stage, work: Path, key: str) -> tuple[bool, str]:
    """(reusable, why not) for a planned stage's output."""
    return stage_cached_state(stage.definition, stage.output_path(work), key)


def dependents(stages: list[Stage], names: set[str]) -> set[str]:
    """``names`` and every stage that reads, directly or not, what they write."""
    out = set(names)
    produced = {s.output for s in stages if s.name in out}
    for s in stages:  # stages are in dependency order
        if s.name not in out and any(i in produced for i in s.inputs):
            out.add(s.name)
            produced.add(s.output)
    return out


def stage_args(stage: Stage, work: Path, key: str, budget: int) -> list[str]:
    args = ["--out", str(stage.output_path(work)), "--cache-key", key, "--budget", str(budget),
            "--params-json", json.dumps(stage.params.key_material())]
    for a in stage.input_args(work):
        args += ["--in", a]
    for role, path in stage.weights.items():
        args += ["--weights", f"{role}={path}"]
    return args


def _discard(out: Path) -> None:
    for p in (out, Path(str(out) + ".partial")):
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def run_job(job: Job, job_name: str, force: set[str] = frozenset(),
            on_stage: Callable[[str, str, dict], None] | None = None,
            on_event: Callable[[dict], None] | None = None) -> RunManifest:
    """Run ``job``; ``on_stage(name, state, info)`` reports reused / running / done / failed."""
    if job.model == "tiny":
        ensure_tiny_model()
    job_plan = plan_job(job)  # the memory planner's choices are part of each stage's params (and key)
    stages = job_plan.stages
    unknown = force - {s.name for s in stages}
    if unknown:
        raise ValueError(f"--force {', '.join(sorted(unknown))}: this job's stages are "
                         f"{', '.join(s.name for s in stages)}")
    keys = plan_keys(stages)
    forced = dependents(stages, set(force))
    work = Path(job.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    manifest = RunManifest(job_name, str(job.output))
    report = on_stage or (lambda *a: None)
    # refuse before running anything: a bad input or refused config found while planning (exit 2), or a stage
    # that has to run and cannot fit its budget in any way (exit 75)
    for p in job_plan.bad_inputs:
        report(p.name, "failed", {"message": p.bad_input, "code": 2})
        raise RunFailed(p.name, p.bad_input, 2, manifest)
    for st in stages:
        p = job_plan.plans[st.name]
        if not p.fits and (st.name in forced or not cached_state(st, work, keys[st.name])[0]):
            msg = f"{st.name} does not fit the {job_plan.budget / 2**30:.2f} GB memory budget: {p.note}"
            report(st.name, "failed", {"message": msg, "code": 75})
            raise RunFailed(st.name, msg, 75, manifest)
    for st in stages:
        plan = job_plan.plans[st.name]
        out = st.output_path(work)
        key = keys[st.name]
        # The lock covers the check and any discard; the stage process takes it again for its whole
        # run, so a concurrent run (or an orphan of a killed one) never writes the same artifact.
        with ArtifactLock(out, timeout=None):
            ok, why = cached_state(st, work, key)
            if ok and st.name not in forced:
                manifest.stages.append(StageRecord(st.name, key, "reused", choice=plan.choice or None,
                                                   choice_label=plan.label if plan.choice else ""))
                report(st.name, "reused", {})
                continue
            if st.name in forced or why.startswith("unusable") or why == "made from other inputs":
                _discard(out)
        report(st.name, "running", {"why": "forced" if st.name in forced else why})
        t0 = time.monotonic()
        run: StageRun = run_stage(st.name, stage_args(st, work, key, job.memory_budget),
                                  work / "logs" / f"{st.name}.log", budget_bytes=job.memory_budget,
                                  on_event=on_event)
        plan_ev = next((e for e in run.events if e.get("event") == "plan"), {})
        est = sum(plan_ev.get(k, 0) for k in ("weights_bytes", "activations_bytes", "baseline_bytes")) \
            if plan_ev else None
        resumed = next((e for e in run.events if e.get("event") == "resumed"), None)
        note = run.message or (f"resumed at step {resumed['step']} of {resumed['total']}" if resumed else "")
        done = next((e for e in run.events if e.get("event") == "done"), {})
        status = "failed" if not run.ok else "reused" if done.get("reused") else "computed"
        if done.get("reused"):
            note = "made meanwhile by another run"
        rec = StageRecord(st.name, key, status, round(time.monotonic() - t0, 3), run.peak_rss, est, note)
        rec.run_s, rec.io_s = done.get("run_s"), done.get("io_s")
        rec.choice, rec.choice_label = plan.choice or None, plan.label if plan.choice else ""
        stream = next((e for e in run.events if e.get("event") == "streaming"), None)
        if stream:
            rec.streaming = {k: stream.get(k) for k in ("load_s", "passes", "blocks", "bytes_read", "steps",
                                                        "s_per_step")}
        manifest.stages.append(rec)
        manifest.write(work / "manifest.json")
        if not run.ok:
            report(st.name, "failed", {"message": run.message, "code": run.returncode})
            raise RunFailed(st.name, run.message, run.returncode, manifest)
        report(st.name, "done", {"wall_s": rec.wall_s, "peak_rss": rec.peak_rss, "estimated": est,
                                 "note": rec.note, "choice": rec.choice_label, "streaming": rec.streaming})
    manifest.write(work / "manifest.json")
    return manifest
