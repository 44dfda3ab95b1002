"""The memory planner: per stage, the weights precision, streaming and decode tiling that fit the budget.

For every stage of a job the planner asks the stage's own ``estimate()`` (weights from the safetensors
headers under the candidate choice, plus activations for the job's shapes; nothing is loaded) and
keeps the first candidate whose estimated peak fits the job's ``memory_budget``:

- text-encode, denoise, refine (the large networks): a ``WeightsMode`` in the order of
  ``models.weights.modes.CANDIDATES``: resident float32 > bf16 > q8 > q4, then streamed in the same
  precision order. Resident first because streaming re-reads every block from disk on every pass
  (the whole 19B transformer per step), far slower than any resident choice; among equals, the most
  exact first (bf16 is exact for the official bf16 files: it only halves the memory).
- decode, with ``tiling: auto``: the official tiling (512 px / 64 frames) when it fits, else the
  largest tiles that fit (``choose_tiling``). An explicit tiling (or ``off``) is kept as written.
- every other stage: its one way of running, checked against the budget.

The choice goes into the stage's parameters (``weights_mode``, ``tiling``) and so into its cache key:
it changes the outputs. It depends only on the job, the budget and the weight headers, so the same
job with the same budget always makes the same choice. When nothing fits, the stage is marked as
not fitting, with the smallest budget that would (its cheapest candidate's estimate): `ltx2 plan`
shows it in red and `ltx2 run` refuses before starting anything (exit 75).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .graph import Stage, plan_stages
from .job import Job

__all__ = ["StagePlan", "JobPlan", "plan_job", "WEIGHTS_MODE_STAGES", "STREAM_BYTES_PER_S", "tiling_label"]

WEIGHTS_MODE_STAGES = ("text-encode", "denoise", "refine")

# Bytes per second a streamed block is brought in at (read + bf16/fp8 decode + cast), for the time
# estimate `ltx2 plan` shows before a run has measured one. Measured by benchmarks/transformer_memory.py
# on this project's 2-core Linux test machine (~0.75 GiB block in ~1 s, page cache or not); a cold read
# is bounded by the disk instead (Apple SSDs: 3-7 GB/s).
STREAM_BYTES_PER_S = 0.8e9


@dataclass
class StagePlan:
    name: str
    choice: dict[str, Any] = field(default_factory=dict)  # the params the planner set (weights_mode / tiling)
    label: str = "-"  # the choice in words
    estimate: Any = None  # the stage's MemoryPlan under the choice (None: could not estimate)
    fits: bool = True
    need: int | None = None  # when nothing fits: the smallest estimated peak among the candidates
    note: str = ""  # why it could not be estimated, or what would make it fit
    stream_bytes_per_pass: int | None = None  # streamed stages: block bytes read per forward pass
    stream_s_per_step: float | None = None  # estimated (or measured, see stream_measured) extra s per step
    stream_measured: bool = False
    passes_per_step: int = 1

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


def tiling_label(t: dict | None) -> str:
    if not t:
        return "untiled"
    parts = []
    if t.get("spatial_tile"):
        parts.append(f"{t['spatial_tile']} px/{t.get('spatial_overlap', 0)}")
    if t.get("temporal_tile"):
        parts.append(f"{t['temporal_tile']} f/{t.get('temporal_overlap', 0)}")
    return "tiles " + " x ".join(parts)


def _tiling_params(tiling) -> dict[str, int] | None:
    """A TilingConfig -> the decode stage's ``tiling`` parameter."""
    if tiling is None:
        return None
    out: dict[str, int] = {}
    if tiling.spatial:
        out.update(spatial_tile=tiling.spatial.tile_size_in_pixels, spatial_overlap=tiling.spatial.tile_overlap_in_pixels)
    if tiling.temporal:
        out.update(temporal_tile=tiling.temporal.tile_size_in_frames,
                   temporal_overlap=tiling.temporal.tile_overlap_in_frames)
    return out or None


class _Estimator:
    """Builds a stage context on predicted inputs and asks the stage's estimate() for given params."""

    def __init__(self, job: Job, stages: list[Stage], budget: int):
        from ltx2.models.weights import read_header

        from .predict import predict

        self.job, self.budget = job, budget
        # the denoise stage's checkpoint: the official file, or a converted one (which keeps the source's config)
        ckpt = next(st.weights["checkpoint"] for st in stages if st.name == "denoise")
        self.predicted = predict(job, stages, read_header(ckpt).config())

    def context(self, st: Stage, params: dict):
        from ltx2.stages.base import StageContext, stage_module
        from ltx2.stages.contract import Progress

        mod = stage_module(st.name)
        inputs = {self.predicted[i].kind: self.predicted[i] for i in st.inputs}
        ctx = StageContext(mod.SPEC, inputs, Path(st.output), mod.resolve_params(inputs, dict(params)),
                           {r: Path(p) for r, p in st.weights.items()}, "", self.budget, Progress(st.name, None))
        return mod, ctx

    def estimate(self, st: Stage, params: dict):
        mod, ctx = self.context(st, params)
        return mod.estimate(ctx)


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


def _stream_cost(plan: StagePlan, st: Stage, job: Job) -> None:
    from ltx2.models.weights.modes import WeightsMode
    from ltx2.stages.memory import gemma_held, header_tensors, transformer_held

    mode = WeightsMode.from_params(plan.choice["weights_mode"])
    if not mode.streaming:
        return
    if st.name == "text-encode":
        held = gemma_held(st.weights["gemma"], mode)
    else:
        held = transformer_held(st.weights["checkpoint"], mode)
    per_pass = held.block_stored * len(held.blocks)
    for role, path in st.weights.items():  # a fused LoRA's A and B are read with each block
        if role == "distilled_lora" or role.startswith("lora."):
            per_pass += sum(b for _, b in header_tensors(path, prefixes=("",)).values())
    plan.stream_bytes_per_pass = per_pass
    measured = _measured(job, st.name, plan.choice)
    plan.stream_measured = measured is not None
    plan.stream_s_per_step = measured if measured is not None else per_pass * plan.passes_per_step / STREAM_BYTES_PER_S


def candidates(st: Stage) -> list:
    """The WeightsModes a stage may run in, in order of preference: every one for an official (or float
    converted) file; for a quantised converted file only its own precision, resident then streamed."""
    from ltx2.models.weights.modes import CANDIDATES, WeightsMode
    from ltx2.stages.memory import file_quantization

    network = "gemma" if st.name == "text-encode" else "transformer"
    path = Path(st.weights[network if network == "gemma" else "checkpoint"])
    fixed = file_quantization(path, network)
    if fixed is not None:
        bits, group_size = fixed
        return [WeightsMode(f"q{bits}", streaming, group_size) for streaming in (False, True)]
    if blocks_stored_in_bf16(path, network):
        # float32 would hold the very same values at twice the memory (and, streamed, convert every block on
        # every pass: 5x the read time, benchmarks/transformer_memory.py); a fused LoRA is rounded to bf16
        # once, as the official bf16 pipelines hold it
        return [m for m in CANDIDATES if m.precision != "float32"]
    return list(CANDIDATES)


def blocks_stored_in_bf16(path: Path, network: str) -> bool:
    """True when every Linear matrix inside the blocks is stored as bf16 (or fp8, which decodes to bf16)."""
    from ltx2.models.weights.modes import block_index
    from ltx2.stages.memory import cached_header, converted_part

    conv = converted_part(path, network)
    if conv is not None:  # a float converted file: its blocks are stored in the part's one float dtype
        return conv.part(network).dtype == "bfloat16"
    if network == "gemma":
        from ltx2.models.text.gemma import weight_plan

        _, _, per_file = weight_plan(path)
        tensors = [cached_header(Path(f)).tensors[k] for f, keys in per_file.items() for k in keys
                   if block_index(k) is not None]
    else:
        tensors = [t for k, t in cached_header(path).tensors.items()
                   if k.startswith("model.diffusion_model.transformer_blocks.")]
    mats = [t for t in tensors if len(t.shape) == 2]
    return bool(mats) and all(t.dtype in ("BF16", "F8_E4M3") for t in mats)


def _choose_weights_mode(est: _Estimator, st: Stage, plan: StagePlan) -> Stage:
    cheapest = None
    for mode in candidates(st):
        params = {**st.params, "weights_mode": mode.params()}
        e = est.estimate(st, params)
        if cheapest is None or e.total < cheapest[0].total:
            cheapest = (e, mode)
        if e.total <= est.budget:
            plan.choice, plan.label, plan.estimate = {"weights_mode": mode.params()}, mode.label, e
            return replace(st, params=params)
    e, mode = cheapest
    plan.choice, plan.label, plan.estimate = {"weights_mode": mode.params()}, mode.label, e
    plan.fits, plan.need = False, e.total
    plan.note = (f"does not fit even as {mode.label}: needs about {_gb(e.total)}, the budget is {_gb(est.budget)}; "
                 f"give memory_budget >= {_gb_up(e.total)}")
    return replace(st, params={**st.params, "weights_mode": mode.params()})


def _choose_tiling(est: _Estimator, st: Stage, plan: StagePlan) -> Stage:
    """tiling: auto -> the official tiling if it fits, else the largest tiles that fit."""
    from ltx2.models.video_vae import DecodeDoesNotFit, choose_tiling
    from ltx2.stages import decode as decode_stage
    from ltx2.stages.contract import PROCESS_BASELINE_BYTES

    e = est.estimate(st, st.params)
    if e.total <= est.budget:
        plan.choice, plan.label, plan.estimate = {"tiling": st.params["tiling"]}, tiling_label(st.params["tiling"]), e
        return st
    # the smallest tiles choose_tiling tries: when even they do not fit, refuse without the search
    smallest = {"spatial_tile": 64, "spatial_overlap": 32, "temporal_tile": 16, "temporal_overlap": 8}
    e_min = est.estimate(st, {**st.params, "tiling": smallest})

    def refuse(why: str) -> Stage:
        plan.choice, plan.label, plan.estimate = {"tiling": smallest}, tiling_label(smallest), e_min
        plan.fits, plan.need = False, e_min.total
        plan.note = (f"{why}; even the smallest tiles ({tiling_label(smallest)}) need about {_gb(e_min.total)}: "
                     f"give memory_budget >= {_gb_up(e_min.total)}")
        return replace(st, params={**st.params, "tiling": smallest})

    if e_min.total > est.budget:
        return refuse(f"the decoder's weights alone take {_gb(e_min.weights_bytes)}")
    _, ctx = est.context(st, st.params)
    cfg, tile_plan, _ = decode_stage._plan(ctx)
    w = decode_stage.held_weight_bytes(st.weights["checkpoint"])  # with the conv-weight copy, as estimate()
    try:
        choice = choose_tiling(cfg, tile_plan.latent_fhw, est.budget, w, overhead_bytes=PROCESS_BASELINE_BYTES)
        tiling = _tiling_params(choice.tiling)
    except DecodeDoesNotFit as err:
        return refuse(str(err))
    params = {**st.params, "tiling": tiling}
    e2 = est.estimate(st, params)
    plan.choice, plan.label, plan.estimate = {"tiling": tiling}, tiling_label(tiling), e2
    if e2.total > est.budget:
        plan.fits, plan.need = False, e2.total
        plan.note = f"needs about {_gb(e2.total)} with these tiles; give memory_budget >= {_gb_up(e2.total)}"
    return replace(st, params=params)


def plan_job(job: Job, budget: int | None = None) -> JobPlan:
    """The job's stages with the planner's choices in their parameters, and one StagePlan per stage.

    Reads weight headers (the tiny model must exist: ``ensure_tiny_model()`` first); loads nothing."""
    from ltx2.stages.contract import StageError

    budget = job.memory_budget if budget is None else budget
    stages = plan_stages(job)
    est = _Estimator(job, stages, budget)
    out_stages: list[Stage] = []
    plans: dict[str, StagePlan] = {}
    for st in stages:
        plan = StagePlan(st.name)
        try:
            if st.name in WEIGHTS_MODE_STAGES:
                if st.name == "denoise" and st.params.get("guidance"):
                    plan.passes_per_step = 1  # the guided passes run stacked in one call: one read per step
                st = _choose_weights_mode(est, st, plan)
                _stream_cost(plan, st, job)
            elif st.name == "decode" and job.tiling == "auto":
                st = _choose_tiling(est, st, plan)
            elif st.name != "export":
                plan.estimate = est.estimate(st, st.params)
                if plan.estimate.total > budget:
                    plan.fits, plan.need = False, plan.estimate.total
                    plan.note = (f"needs about {_gb(plan.estimate.total)}; give memory_budget >= "
                                 f"{_gb_up(plan.estimate.total)}")
            if st.name == "decode" and job.tiling != "auto":
                plan.label = tiling_label(st.params["tiling"])
        except (StageError, KeyError, ValueError, OSError) as e:
            plan.estimate, plan.note = None, f"{type(e).__name__}: {e}"
        out_stages.append(st)
        plans[st.name] = plan
    return JobPlan(out_stages, plans, budget)


def _gb(n: int) -> str:
    return f"{n / 2**30:.2f} GB"


def _gb_up(n: int) -> str:
    """A budget to write in the job: rounded up to the next 0.5 GB."""
    return f"{math.ceil(n / 2**29) / 2:g}GB"
