"""The stage graph of a job: its pipeline's recipe (orchestrator/recipes.py) made concrete.

Each :class:`Stage` names its input artifacts by port, its one output (an artifact name in the work
folder, or a file path), its typed parameters (only what shapes the output: the memory budget or the
work folder do not belong here) and the weight files or folders it reads, by role. With a converted
folder (``model.converted``) a role is served by the converted file holding the checkpoint part the
stage declares it reads (its registry entry). Cache keys are computed from exactly these.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ltx2.artifacts_schema.keys import stage_key_material as _key_material
from ltx2.artifacts_schema.keys import digest, file_key, weight_identity
from ltx2.spec.layout import lora_role
from ltx2.stages.registry import StageDef, StageParams, stage_def

from .job import Job
from .recipes import Expand, Node, recipe_for, resolve_tiling

__all__ = ["Stage", "plan_stages", "resolve_tiling", "stage_key_material", "stage_key", "plan_keys"]


@dataclass(frozen=True)
class Stage:
    """One step of a job's plan. ``ports``: port -> the artifact name(s) it reads. ``output``: an artifact
    name in the work folder, or for a file output (export, preview) the absolute path of the file."""

    name: str  # the node's name in the plan (the stage's, or e.g. image-encode.s1.0 where it runs several times)
    ports: Mapping[str, str | tuple[str, ...]]
    output: str
    params: StageParams
    weights: dict[str, Path] = field(default_factory=dict)
    planned: bool = False  # the memory planner may replace parameters with the stage's memory choices
    stage: str = ""  # the registered stage it runs (default: ``name``)

    def __post_init__(self) -> None:
        if not self.stage:
            object.__setattr__(self, "stage", self.name)

    @property
    def definition(self) -> StageDef:
        return stage_def(self.stage)

    @property
    def files(self) -> tuple[Path, ...]:
        """The media files it reads through ``file`` ports (absolute paths)."""
        return tuple(Path(self.ports[p]) for p, spec in self.definition.inputs.items()
                     if spec.kind == "file" and p in self.ports)

    @property
    def version(self) -> int:
        return self.definition.version

    @property
    def inputs(self) -> tuple[str, ...]:
        """Every input artifact name, in port order."""
        out: list[str] = []
        for v in self.ports.values():
            out.extend(v if isinstance(v, tuple) else (v,))
        return tuple(out)

    def output_path(self, work_dir: Path) -> Path:
        out = Path(self.output)
        return out if out.is_absolute() else Path(work_dir) / out

    def input_paths(self, work_dir: Path) -> list[Path]:
        return [Path(work_dir) / name for name in self.inputs]

    def input_args(self, work_dir: Path) -> list[str]:
        """``--in PORT=PATH`` values for the stage process."""
        out = []
        for port, v in self.ports.items():
            for name in (v if isinstance(v, tuple) else (v,)):
                out.append(f"{port}={Path(work_dir) / name}")
        return out


def stage_weights(job: Job, tiny_dir: Path | None = None
                  ) -> Callable[[StageDef, Sequence[str], Sequence[Path]], dict[str, Path]]:
    """``files(stage, roles, loras)`` -> role -> path: the converted file where the job's converted folder holds
    the checkpoint part the stage reads for that role, else the official file; the LoRA files ``loras`` are roles
    lora.1, lora.2, ..."""
    official = job.weight_files(tiny_dir)
    converted = job.converted_roles()

    def files(stage: StageDef, roles: Sequence[str], loras: Sequence[Path] = ()) -> dict[str, Path]:
        out = {}
        for role in roles:
            part = stage.weights.get(role) or role
            out[role] = converted.get(part) or official[role]
        out.update({lora_role(i): Path(p) for i, p in enumerate(loras)})
        return out
    return files


def _source(node: Node, port: str, spec, built: Mapping[str, Stage], job: Job) -> str | tuple[str, ...]:
    """The artifact name(s) or file path a port reads."""
    if callable(spec):
        got = spec(job)
        if isinstance(got, (str, Path)) and stage_def(node.stage).inputs[port].kind == "file":
            return str(Path(got).resolve())
        return tuple(_source(node, port, name, built, job) for name in got)
    for name in spec.split("|"):
        if name in built:
            return built[name].output
    raise KeyError(f"recipe: {node.name} reads {spec}, which this job does not run")


def _entries(job: Job):
    for entry in recipe_for(job):
        yield from (entry(job) if isinstance(entry, Expand) else (entry,))


def plan_stages(job: Job, tiny_dir: Path | None = None) -> list[Stage]:
    """The ordered stages of ``job``'s pipeline. Needs no artifact and no weight file to exist."""
    files = stage_weights(job, tiny_dir)
    built: dict[str, Stage] = {}
    for node in _entries(job):
        if not node.when(job):
            continue
        sd = stage_def(node.stage)
        ports = {port: _source(node, port, src, built, job) for port, src in node.inputs.items()}
        ports = {port: v for port, v in ports.items() if v != ()}
        loras = [p for p, _ in node.loras(job)] if node.loras is not None else []
        output = str(node.output(job)) if node.output is not None else (
            f"{node.id}.zarr" if node.id else sd.output_name)
        built[node.name] = Stage(node.name, ports, output, sd.parse_params(node.params(job)),
                                 files(sd, [*sd.weights, *node.extra_roles], loras), planned=node.planned(job),
                                 stage=node.stage)
    return list(built.values())


# ----------------------------------------------------------------------------- cache keys of a plan

def stage_key_material(stage: Stage, input_keys: Mapping[str, str],
                       identify: Callable[[Path], Any] = weight_identity) -> dict[str, Any]:
    """Everything a stage's key is the hash of (useful to show why two keys differ); ``input_keys``:
    artifact name -> key."""
    missing = [a for a in stage.inputs if a not in input_keys]
    if missing:
        raise KeyError(f"stage {stage.name}: no key for its input artifact(s) {missing}")
    # a media file enters by its port and content (as the stage process keys it): not by its name or folder
    files = {str(f): port for port, f in zip(_file_ports(stage), stage.files)}
    return _key_material(stage.stage, stage.version, stage.params.key_material(), stage.weights,
                         {files.get(a, a): input_keys[a] for a in stage.inputs}, identify)


def _file_ports(stage: Stage) -> list[str]:
    return [p for p, spec in stage.definition.inputs.items() if spec.kind == "file" and p in stage.ports]


def stage_key(stage: Stage, input_keys: Mapping[str, str],
              identify: Callable[[Path], Any] = weight_identity) -> str:
    return digest(stage_key_material(stage, input_keys, identify))


def plan_keys(stages: Sequence[Stage], identify: Callable[[Path], Any] = weight_identity,
              external: Mapping[str, str] | None = None) -> dict[str, str]:
    """Stage name -> key for a whole plan, in order. ``external`` gives content keys of input
    artifacts no stage of the plan produces (e.g. a conditioning image)."""
    by_artifact: dict[str, str] = dict(external or {})
    keys: dict[str, str] = {}
    for stage in stages:
        for f in stage.files:  # a media file is keyed by its content
            by_artifact.setdefault(str(f), file_key(f))
        key = stage_key(stage, by_artifact, identify)
        keys[stage.name] = key
        by_artifact[stage.output] = key
    return keys
