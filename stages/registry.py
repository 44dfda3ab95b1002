"""The stage registry: what a stage is, declared once, in the stage's own module.

Every stage module ends with ``STAGE = StageDef(...)``: its name and version, the artifact it writes,
its named input ports, the weight roles it reads (and which checkpoint part each stands for), its
typed ``Params`` class and its hooks (estimate, run, and for the planner: memory choices, the
predicted output, a config check). The orchestrator, the planner, ``weights check`` and the CLI
derive everything from these entries; adding a stage is one new module plus a line in a recipe
(orchestrator/recipes.py).

The module of stage ``a-b`` is ``ltx2.stages.a_b`` (so running one stage imports only its module).
"""

from __future__ import annotations

import hashlib
import importlib
import pkgutil
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import mlx.core as mx
from pydantic import BaseModel, ConfigDict, ValidationError

from ltx2.artifacts_schema import ArtifactWriter, Producer
from ltx2.spec.layout import CHECKPOINT_PARTS

from .contract import BadInput, MemoryPlan, Progress


class StageParams(BaseModel):
    """A stage's parameters: frozen, unknown fields refused, defaults declared once (here, per stage).

    Only what shapes the output belongs here (the memory budget or the work folder do not): the
    canonical JSON dump is part of the output's cache key."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    def key_material(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


FILE = "file"  # a port of this kind reads a media file by path (an image to encode), not an artifact


@dataclass(frozen=True)
class Port:
    """A named input: the artifact kind it reads (or ``"file"``: a file by path); ``many``: a list of them."""

    kind: str
    many: bool = False
    optional: bool = False


@dataclass(frozen=True)
class PredictedOutput:
    """What a stage's output will hold, before anything has run (array shapes and facts)."""

    shapes: dict[str, tuple[int, ...]]
    facts: dict[str, Any]


@dataclass
class StageContext:
    """What a stage's hooks get: its declaration, inputs by port, output path, params, weights, budget."""

    stage: "StageDef"
    inputs: dict[str, Any]  # port -> Artifact (or a list of them for a `many` port; or predicted artifacts)
    out: Path
    params: StageParams
    weights: dict[str, Path]
    cache_key: str
    budget: int | None
    progress: Progress
    io_seconds: list[float] = field(default_factory=lambda: [0.0])  # artifact reads + writes (overhead benchmark)

    def writer(self):
        """The output artifact's writer (resuming a matching partial when the stage resumes)."""
        t0 = time.perf_counter()
        inputs = {port: input_key(a) for port, a in self.inputs.items() if not isinstance(a, list)}
        w = ArtifactWriter(self.out, self.stage.output_kind, producer=Producer(self.stage.name, str(self.stage.version)),
                           cache_key=self.cache_key, input_keys=inputs, params=self.params.key_material(),
                           resume=self.stage.resumable)
        self.io_seconds[0] += time.perf_counter() - t0
        return Timed(w, self.io_seconds)


@lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int, inode: int) -> str:
    # the stat facts are part of the memo key: a file rewritten in place is hashed afresh
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 (hex) of a file's content: the key of a file input (its name and place are not part of it)."""
    st = Path(path).stat()
    return _sha256(str(path), st.st_size, st.st_mtime_ns, st.st_ino)


def input_key(a: Any) -> str:
    """The key an input enters a cache key with: an artifact's own key, a file input's content hash."""
    return file_sha256(a) if isinstance(a, Path) else a.cache_key


class Timed:
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
                    mx.eval(out if name == "read" else list(out.values()))
                return out
            finally:
                self._counter[0] += time.perf_counter() - t0
        return timed


@dataclass(frozen=True)
class StageDef:
    name: str
    version: int  # bump whenever the output for the same inputs and params changes: it re-keys every artifact
    inputs: Mapping[str, Port]
    params: type[StageParams]
    estimate: Callable[[StageContext], MemoryPlan]
    run: Callable[[StageContext], None]
    output_kind: str | None  # the artifact kind it writes; None: it writes a file (export, preview)
    output_name: str | None = None  # the artifact's name in the work folder (None for a file output)
    # weight role -> the checkpoint part (spec.layout) it reads from that file; None: the whole file
    weights: Mapping[str, str | None] = field(default_factory=dict)
    optional_weights: tuple[str, ...] = ()  # roles (or patterns: lora.*) read only when given
    resumable: bool = False
    budget_fix: str = "raise memory_budget in the job"
    # fill parameters a hand run left out from the inputs (refine: the size of the latents it reads)
    resolve: Callable[[Mapping[str, Any], StageParams], StageParams] | None = None
    # the planner: (parameter update, label) pairs to try, most preferred first (weights precision, decode tiles)
    choices: Callable[[StageContext], Iterable[tuple[dict[str, Any], str]]] | None = None
    # the large network a streamed weights mode reads block by block ("transformer", "gemma"): the planner
    # estimates its read cost per pass
    streams: str | None = None
    # the planner: what the output will hold, from the (predicted) inputs and params
    predict: Callable[[StageContext], PredictedOutput] | None = None
    # headers-only checks of weights and params (a refused config) that must fail before any stage runs
    check: Callable[[StageContext], None] | None = None
    summary: str = ""

    @property
    def all_weight_roles(self) -> tuple[str, ...]:
        return tuple(self.weights) + self.optional_weights

    def parse_params(self, raw: Mapping[str, Any] | StageParams | None) -> StageParams:
        """Validate raw parameters into this stage's Params; bad ones are bad input naming each field."""
        if isinstance(raw, self.params):
            return raw
        try:
            return self.params.model_validate(dict(raw or {}))
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '(params)'}: {err['msg']} "
                                 f"(got {err.get('input')!r})" for err in e.errors(include_url=False))
            raise BadInput(f"{self.name}: bad parameters: {problems}; see `ltx2 stage {self.name} --help`") from None


def module_name(stage: str) -> str:
    return f"{__package__}.{stage.replace('-', '_')}"


@cache
def stage_def(name: str) -> StageDef:
    """The registry entry of stage ``name`` (imports only that stage's module)."""
    try:
        mod = importlib.import_module(module_name(name))
    except ModuleNotFoundError as e:
        if e.name != module_name(name):
            raise
        mod = None
    stage = getattr(mod, "STAGE", None)
    if not isinstance(stage, StageDef) or stage.name != name:
        raise BadInput(f"unknown stage {name!r}; stages are: {', '.join(stage_names())}")
    return stage


@cache
def stage_names() -> tuple[str, ...]:
    """Every registered stage, in module order (imports every stage module)."""
    from . import __path__ as pkg_path

    names = []
    for info in pkgutil.iter_modules(pkg_path):
        mod = importlib.import_module(f"{__package__}.{info.name}")
        stage = getattr(mod, "STAGE", None)
        if isinstance(stage, StageDef):
            names.append(stage.name)
    return tuple(sorted(names))


def readers_of(*, prefixes: Sequence[str] = (), role: str | None = None,
               order: Sequence[str] | None = None) -> tuple[str, ...]:
    """The stages that read checkpoint keys under ``prefixes`` (their declared checkpoint part holds one of
    them: spec.layout's prefixes, where a key belongs to the longest prefix it starts with, so two prefix
    sets share keys exactly when they share a prefix) or the weight file of ``role`` (declared, or matched
    by an optional pattern: ``lora.1`` by ``lora.*``). In ``order`` (stage names, e.g. the order a pipeline
    runs them; stages it leaves out come last), else in registry order. What ``weights check`` reports."""
    wanted = set(prefixes)
    found = []
    for name in stage_names():
        st = stage_def(name)
        parts = [part for part in st.weights.values() if part is not None]
        if any(wanted & set(CHECKPOINT_PARTS[part]) for part in parts) or (role is not None and (
                role in st.weights or any(fnmatchcase(role, pattern) for pattern in st.optional_weights))):
            found.append(name)
    if order is not None:
        rank = {name: i for i, name in enumerate(order)}
        found.sort(key=lambda name: rank.get(name, len(rank)))
    return tuple(found)
