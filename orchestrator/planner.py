"""The memory planner: per stage, the parameters (weights precision and streaming, decode tiles) that
fit the budget, and the refusals that must stop a job before any stage runs.

For every stage of a job the planner builds the stage's context on the predicted inputs (the shapes
the upstream stages' ``predict`` hooks give; nothing has run), runs its ``check`` hook (headers-only:
a config the stage cannot run, an STG block the transformer lacks), then, when the recipe lets the
planner choose, tries the stage's ``choices`` in order and keeps the first whose ``estimate`` fits the
job's ``memory_budget``:

- text-encode, denoise, refine (the large networks): a weights mode in the order of
  ``models.weights.modes.CANDIDATES``: resident float32 > bf16 > q8 > q4, then streamed in the same
  precision order. Resident first because streaming re-reads every block from disk on every pass
  (the whole 19B transformer per step), far slower than any resident choice.
- decode, with ``tiling: auto``: the official tiling (512 px / 64 frames) when it fits, else the
  largest tiles that fit. An explicit tiling (or ``off``) is kept as written.
- every other stage: its one way of running, checked against the budget.

The choice goes into the stage's parameters and so into its cache key: it changes the outputs. It
depends only on the job, the budget and the weight headers. When nothing fits, the stage is marked as
not fitting, with the smallest budget that would (its cheapest candidate's estimate): `ltx2 plan`
shows it in red and `ltx2 run` refuses before starting anything (exit 75). A bad input found while
planning (exit 2) refuses the same way.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ltx2.spec.errors import BadInputError
from ltx2.stages.contract import MemoryPlan, Progress
from ltx2.stages.memory import stream_bytes_per_pass
from ltx2.stages.registry import StageContext

from .graph import Stage, plan_stages
from .job import Job

__all__ = ["StagePlan", "JobPlan", "PredictedArtifact", "plan_job", "STREAM_BYTES_PER_S"]

# Bytes per second a streamed block is brought in at (read + bf16/fp8 decode + cast), for the time
# estimate `ltx2 plan` shows before a run has measured one. Measured by benchmarks/transformer_memory.py
# on this project's 2-core Linux test machine (~0.75 GiB block in ~1 s, page cache or not); a cold read
# is bounded by the disk instead (Apple SSDs: 3-7 GB/s).
STREAM_BYTES_PER_S = 0.8e9


@dataclass
class PredictedArtifact:
    """Quacks like artifacts_schema.Artifact for what hooks read before it exists: shape(), facts, params."""

    path: Path
    kind: str
    shapes: dict[str, tuple[int, ...]]
    facts: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    cache_key: str = ""

    def shape(self, name: str) -> tuple[int, ...]:
        return self.shapes[name]


@dataclass
class StagePlan:
    name: str
    choice: dict[str, Any] = field(default_factory=dict)  # the params the planner set (weights_mode / tiling)
    label: str = "-"  # the choice in words
    estimate: MemoryPlan | None = None  # under the choice (None: could not estimate)
    fits: bool = True
    need: int | None = None  # when nothing fits: the smallest estimated peak among the candidates
    note: str = ""  # why it could not be estimated, or what would make it fit
    bad_input: str | None = None  # a refused input or config (exit 2): the job must not run
    stream_bytes_per_pass: int | None = None  # streamed stages: block bytes read per forward pass
    stream_s_per_step: float | None = None  # estimated (or measured, see stream_measured) extra s per step
    stream_measured: bool = False
    passes_per_step: int = 1  # the guided passes run stacked in one call: one read per step

    @property
    def total(self) -> int | None:
        return None if self.estimate is None else self.estimate.total


@dataclass
class JobPlan:
    stages: list[Stage]  # with the choices in their params
    plans: dict[str, StagePlan]
    budget: int

    @property
    def refusals(self) -> list[StagePlan]:
        return [p for p in self.plans.values() if not p.fits]

    @property
    def bad_inputs(self) -> list[StagePlan]:
        return [p for p in self.plans.values() if p.bad_input]


def _context(st: Stage, predicted: Mapping[str, PredictedArtifact], budget: int) -> StageContext:
    sd = st.definition
    inputs: dict[str, Any] = {}
    for port, v in st.ports.items():
        if sd.inputs[port].kind == "file":  # a media file: the hooks read its path
            inputs[port] = Path(v)
        else:
            inputs[port] = [predicted[n] for n in v] if isinstance(v, tuple) else predicted[v]
    params = sd.resolve(inputs, st.params) if sd.resolve is not None else st.params
    return StageContext(sd, inputs, Path(st.output), params, {r: Path(p) for r, p in st.weights.items()}, "",
                        budget, Progress(st.name, None))


def _with(ctx: StageContext, update: dict[str, Any]) -> StageContext:
    return replace(ctx, params=ctx.stage.parse_params({**ctx.params.key_material(), **update}))


def _choose(ctx: StageContext, plan: StagePlan) -> StageContext:
    """The first of the stage's choices whose estimate fits the budget, else the cheapest (not fitting)."""
    cheapest = None
    for update, label in ctx.stage.choices(ctx):
        trial = _with(ctx, update)
        update = {k: trial.params.key_material()[k] for k in update}  # canonical JSON form (manifest, key)
        e = ctx.stage.estimate(trial)
        if cheapest is None or e.total < cheapest[0].total:
            cheapest = (e, update, label, trial)
        if e.total <= ctx.budget:
            plan.choice, plan.label, plan.estimate = update, label, e
            return trial
    e, update, label, trial = cheapest
    plan.choice, plan.label, plan.estimate = update, label, e
    plan.fits, plan.need = False, e.total
    plan.note = (f"does not fit even as {label}: needs about {_gb(e.total)}, the budget is {_gb(ctx.budget)}; "
                 f"give memory_budget >= {_gb_up(e.total)}")
    return trial


def _measured(job: Job, name: str, choice: dict) -> float | None:
    """Seconds per step streaming cost a previous run of this stage, with this choice, measured."""
    try:
        m = json.loads((Path(job.work_dir) / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    for rec in m.get("stages", []):
        s = rec.get("streaming") or {}
        if rec.get("name") == name and rec.get("choice") == choice and s.get("s_per_step") is not None:
            return float(s["s_per_step"])
    return None


def _stream_cost(plan: StagePlan, ctx: StageContext, job: Job) -> None:
    network = ctx.stage.streams
    per_pass = stream_bytes_per_pass(ctx, network) if network else None
    if per_pass is None:
        return
    plan.stream_bytes_per_pass = per_pass
    measured = _measured(job, ctx.stage.name, plan.choice)
    plan.stream_measured = measured is not None
    plan.stream_s_per_step = measured if measured is not None else per_pass * plan.passes_per_step / STREAM_BYTES_PER_S


def plan_job(job: Job, budget: int | None = None) -> JobPlan:
    """The job's stages with the planner's choices in their parameters, and one StagePlan per stage.

    Reads weight headers (the tiny model must exist: ``ensure_tiny_model()`` first); loads nothing."""
    budget = job.memory_budget if budget is None else budget
    predicted: dict[str, PredictedArtifact] = {}
    out_stages: list[Stage] = []
    plans: dict[str, StagePlan] = {}
    for st in plan_stages(job):
        sd = st.definition
        plan = StagePlan(st.name)
        try:
            ctx = _context(st, predicted, budget)
            if sd.check is not None:
                sd.check(ctx)
            if st.planned and sd.choices is not None:
                ctx = _choose(ctx, plan)
                st = replace(st, params=sd.parse_params({**st.params.key_material(), **plan.choice}))
                _stream_cost(plan, ctx, job)
            else:
                plan.estimate = sd.estimate(ctx)
                if plan.estimate.total > budget:
                    plan.fits, plan.need = False, plan.estimate.total
                    plan.note = (f"needs about {_gb(plan.estimate.total)}; give memory_budget >= "
                                 f"{_gb_up(plan.estimate.total)}")
            if sd.predict is not None:
                out = sd.predict(ctx)
                predicted[st.output] = PredictedArtifact(Path(st.output), sd.output_kind or "", out.shapes,
                                                         out.facts, st.params.key_material())
        except BadInputError as e:
            plan.bad_input = plan.note = str(e)
        except (KeyError, ValueError, OSError) as e:
            plan.estimate, plan.note = None, f"{type(e).__name__}: {e}"
        out_stages.append(st)
        plans[st.name] = plan
    return JobPlan(out_stages, plans, budget)


def _gb(n: int) -> str:
    return f"{n / 2**30:.2f} GB"


def _gb_up(n: int) -> str:
    """A budget to write in the job: rounded up to the next 0.5 GB."""
    return f"{math.ceil(n / 2**29) / 2:g}GB"
