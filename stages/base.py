"""What every stage shares: its declaration, the context it runs in, and the entry wrapper.

A stage module is thin. It declares ``SPEC`` (name, input kinds, output kind, whether it resumes)
and two functions: ``estimate(ctx) -> MemoryPlan`` (what it will hold, computed from safetensors
headers and the input shapes, before any weight is read) and ``run(ctx)`` (read, load, compute,
write one artifact). ``execute()`` turns a stage's own errors into the contract's exit codes.
"""

from __future__ import annotations

import fnmatch
import importlib
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ltx2.artifacts_schema import Artifact, ArtifactError, ArtifactWriter, Producer, open_artifact
from ltx2.models.weights import CheckpointError
from ltx2.orchestrator.execute import cached_state
from ltx2.orchestrator.graph import STAGE_VERSIONS

from .contract import BadInput, MemoryPlan, Progress, StageError, check_budget, die_with_parent, limit_data_segment

# stage name -> module in this package
MODULES = {
    "text-encode": "text_encode",
    "denoise": "denoise",
    "upscale": "upscale",
    "temporal-upscale": "temporal_upscale",
    "refine": "refine",
    "decode": "decode",
    "vocode": "vocode",
    "export": "export",
}


@dataclass(frozen=True)
class StageSpec:
    name: str
    inputs: tuple[str, ...]  # artifact kinds it reads, one artifact per kind
    output_kind: str | None  # None: writes a file, not an artifact (export)
    weights: tuple[str, ...] = ()  # weight roles it reads (checkpoint, gemma, spatial_upsampler, distilled_lora)
    optional_weights: tuple[str, ...] = ()  # roles (or patterns: lora.*) it reads only when given (LoRAs)
    resumable: bool = False
    budget_fix: str = "raise memory_budget in the job"

    @property
    def version(self) -> int:
        return STAGE_VERSIONS[self.name]


@dataclass
class StageContext:
    spec: StageSpec
    inputs: dict[str, Artifact]  # kind -> artifact
    out: Path
    params: dict[str, Any]
    weights: dict[str, Path]
    cache_key: str
    budget: int | None
    progress: Progress
    io_seconds: list[float] = field(default_factory=lambda: [0.0])  # artifact reads + writes (overhead benchmark)

    def writer(self) -> ArtifactWriter:
        """The output artifact's writer (resuming a matching partial when the stage resumes)."""
        t0 = time.perf_counter()
        w = ArtifactWriter(self.out, self.spec.output_kind, producer=Producer(self.spec.name, str(self.spec.version)),
                           cache_key=self.cache_key, input_keys={k: a.cache_key for k, a in self.inputs.items()},
                           params=self.params, resume=self.spec.resumable)
        self.io_seconds[0] += time.perf_counter() - t0
        return _Timed(w, self.io_seconds)


class _Timed:
    """Adds the time spent in an artifact's methods to a shared counter (reads and writes are stage
    overhead, not model compute; benchmarks/overhead.py reports them)."""

    def __init__(self, inner, counter: list[float]):
        self._inner, self._counter = inner, counter

    def __getattr__(self, name):
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        def timed(*a, **kw):
            t0 = time.perf_counter()
            try:
                out = attr(*a, **kw)
                if name in ("read", "load_checkpoint"):  # MLX is lazy: count the actual read
                    import mlx.core as mx

                    mx.eval(out if name == "read" else list(out.values()))
                return out
            finally:
                self._counter[0] += time.perf_counter() - t0
        return timed


def stage_module(name: str):
    if name not in MODULES:
        raise BadInput(f"unknown stage {name!r}; stages are: {', '.join(MODULES)}")
    return importlib.import_module(f"{__package__}.{MODULES[name]}")


def open_inputs(spec: StageSpec, paths: list[Path]) -> dict[str, Artifact]:
    """Open and validate each input; its kind says which input it is."""
    found: dict[str, Artifact] = {}
    for p in paths:
        try:
            art = open_artifact(p)
        except ArtifactError as e:
            raise BadInput(str(e)) from e
        if art.kind not in spec.inputs:
            raise BadInput(f"{p}: is a {art.kind} artifact, but {spec.name} reads {' and '.join(spec.inputs)}")
        if art.kind in found:
            raise BadInput(f"{spec.name}: two {art.kind} artifacts given ({found[art.kind].path} and {p}); give one")
        found[art.kind] = art
    missing = [k for k in spec.inputs if k not in found]
    if missing:
        raise BadInput(f"{spec.name} needs a {' and a '.join(missing)} artifact: add --in PATH.zarr")
    return found


def execute(name: str, inputs: list[Path], out: Path, params: dict[str, Any], weights: dict[str, Path] | None,
            cache_key: str | None, budget: int | None, progress_fd: int | None) -> int:
    """Run one stage in this process; returns the contract's exit code."""
    die_with_parent()
    progress = Progress(name, progress_fd)
    try:
        mod = stage_module(name)
        spec: StageSpec = mod.SPEC
        arts = open_inputs(spec, inputs)
        params = mod.resolve_params(arts, dict(params))
        weights = resolve_weights(spec, weights)
        if cache_key is None:
            cache_key = hand_run_key(spec, arts, params, weights)
        ctx = StageContext(spec, arts, Path(out), params, weights, cache_key, budget, progress)
        ctx.inputs = {k: _Timed(a, ctx.io_seconds) for k, a in arts.items()}
        with _output_lock(ctx.out, progress):
            if cached_state(name, ctx.out, cache_key)[0]:  # made meanwhile (another run, or an orphan)
                progress.emit("done", reused=True)
                return 0
            plan: MemoryPlan = mod.estimate(ctx)
            progress.emit("plan", weights_bytes=plan.weights_bytes, activations_bytes=plan.activations_bytes,
                          baseline_bytes=plan.baseline_bytes)
            check_budget(name, plan, budget, spec.budget_fix)
            limit_data_segment(budget)
            progress.emit("start", since_process_start=round(time.time() - _process_start(), 3))
            t0 = time.perf_counter()
            mod.run(ctx)
            progress.emit("done", run_s=round(time.perf_counter() - t0, 3), io_s=round(ctx.io_seconds[0], 3))
        return 0
    except (StageError, ArtifactError, CheckpointError) as e:
        if isinstance(e, StageError):
            code = e.exit_code
        else:  # a writer misuse is the stage's own bug (1); anything else is bad input (2)
            code = 1 if getattr(e, "reason", None) == "bad_write" else 2
        progress.emit("error", message=str(e), code=code)
        print(f"error: {e}", file=sys.stderr)
        return code
    except MemoryError as e:
        progress.emit("error", message=f"{name} ran out of memory: {e}", code=75)
        print(f"error: {name} ran out of memory", file=sys.stderr)
        return 75
    except Exception as e:  # noqa: BLE001 - a bug: show the trace, exit 1
        traceback.print_exc()
        progress.emit("error", message=f"{name} failed with a bug: {type(e).__name__}: {e}", code=1)
        return 1
    finally:
        progress.close()


def _output_lock(out: Path, progress: Progress):
    """Hold the output's lock for the whole stage: no two processes ever write one artifact."""
    from ltx2.artifacts_schema import ArtifactLock

    lock = ArtifactLock(out, timeout=None)
    try:
        return ArtifactLock(out, timeout=0).acquire()
    except ArtifactError:
        progress.emit("waiting", message=f"{out.name} is being written by another process; waiting for it")
        return lock


def _process_start() -> float:
    import psutil

    return psutil.Process().create_time()


def resolve_weights(spec: StageSpec, weights: dict[str, Path] | None) -> dict[str, Path]:
    """The weight files of the stage's roles; by default the embedded tiny model (made on first use)."""
    weights = dict(weights or {})
    unknown = [r for r in weights if not any(fnmatch.fnmatchcase(r, pat) for pat in spec.weights + spec.optional_weights)]
    if unknown:
        raise BadInput(f"{spec.name} reads no {', '.join(unknown)} weights; it reads "
                       f"{', '.join(spec.weights + spec.optional_weights) or 'none'}")
    missing = [r for r in spec.weights if r not in weights]
    if missing:
        from ltx2.models.tiny import ensure_tiny_model

        tiny = ensure_tiny_model()
        for r in missing:
            weights[r] = tiny[r]
    for role, path in weights.items():
        if not Path(path).exists():
            raise BadInput(f"{spec.name}: weight file for {role} not found: {path}")
    return {r: Path(p) for r, p in weights.items()}


def hand_run_key(spec: StageSpec, arts: dict[str, Artifact], params: dict, weights: dict[str, Path]) -> str:
    """The key a stage run by hand writes: the same recipe the orchestrator uses."""
    from ltx2.orchestrator.cache_keys import stage_key
    from ltx2.orchestrator.graph import Stage

    names = tuple(a.path.name for a in arts.values())
    stage = Stage(spec.name, names, "", params=params, weights=weights)
    return stage_key(stage, {a.path.name: a.cache_key for a in arts.values()})
