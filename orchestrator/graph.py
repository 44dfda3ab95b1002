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
from ltx2.artifacts_schema.keys import digest, weight_identity
from ltx2.spec.layout import lora_role
from ltx2.stages.registry import StageDef, StageParams, stage_def

from .job import Job
from .recipes import RECIPES, Node, resolve_tiling

__all__ = ["Stage", "plan_stages", "resolve_tiling", "stage_key_material", "stage_key", "plan_keys"]


@dataclass(frozen=True)
class Stage:
    """One step of a job's plan. ``ports``: port -> the artifact name(s) it reads. ``output``: an artifact
    name in the work folder, or for a file output (export, preview) the absolute path of the file."""

    name: str
    ports: Mapping[str, str | tuple[str, ...]]
    output: str
    params: StageParams
    weights: dict[str, Path] = field(default_factory=dict)
    planned: bool = False  # the memory planner may replace parameters with the stage's memory choices

    @property
    def definition(self) -> StageDef:
        return stage_def(self.name)

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


def stage_weights(job: Job, tiny_dir: Path | None = None) -> Callable[[StageDef, Sequence[str]], dict[str, Path]]:
    """``files(stage, roles)`` -> role -> path: the converted file where the job's converted folder holds the
    checkpoint part the stage reads for that role, else the official file. User LoRAs are roles lora.N."""
    official = job.weight_files(tiny_dir)
    official.update({lora_role(i): p for i, (p, _) in enumerate(job.loras)})
    converted = job.converted_roles()

    def files(stage: StageDef, roles: Sequence[str]) -> dict[str, Path]:
        out = {}
        for role in roles:
            part = stage.weights.get(role) or role
            out[role] = converted.get(part) or official[role]
        return out
    return files


def _source(node: Node, spec: str, built: Mapping[str, Stage]) -> str:
    for name in spec.split("|"):
        if name in built:
            return built[name].output
    raise KeyError(f"recipe: {node.stage} reads {spec}, which this job does not run")


def plan_stages(job: Job, tiny_dir: Path | None = None) -> list[Stage]:
    """The ordered stages of ``job``'s pipeline. Needs no artifact and no weight file to exist."""
    files = stage_weights(job, tiny_dir)
    built: dict[str, Stage] = {}
    for node in RECIPES[job.pipeline]:
        if not node.when(job):
            continue
        sd = stage_def(node.stage)
        ports = {port: _source(node, src, built) for port, src in node.inputs.items()}
        roles = [*sd.weights, *node.extra_roles]
        if node.user_loras:
            roles += [lora_role(i) for i in range(len(job.loras))]
        output = str(node.output(job)) if node.output is not None else sd.output_name
        built[node.stage] = Stage(node.stage, ports, output, sd.parse_params(node.params(job)), files(sd, roles),
                                  planned=node.planned(job))
    return list(built.values())


# ----------------------------------------------------------------------------- cache keys of a plan

def stage_key_material(stage: Stage, input_keys: Mapping[str, str],
                       identify: Callable[[Path], Any] = weight_identity) -> dict[str, Any]:
    """Everything a stage's key is the hash of (useful to show why two keys differ); ``input_keys``:
    artifact name -> key."""
    missing = [a for a in stage.inputs if a not in input_keys]
    if missing:
        raise KeyError(f"stage {stage.name}: no key for its input artifact(s) {missing}")
    return _key_material(stage.name, stage.version, stage.params.key_material(), stage.weights,
                         {a: input_keys[a] for a in stage.inputs}, identify)


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
        key = stage_key(stage, by_artifact, identify)
        keys[stage.name] = key
        by_artifact[stage.output] = key
    return keys
