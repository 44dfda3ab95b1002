"""Running one stage in this process: open its inputs by port, validate its params, check its budget,
hold its output's lock, run it, and turn its errors into the contract's exit codes.

A stage module declares ``STAGE`` (stages/registry.py); this module is the same for every stage.
"""

from __future__ import annotations

import fnmatch
import hashlib
import errno
import json
import os
import sys
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psutil

from ltx2.artifacts_schema import ArtifactError, ArtifactLock, open_artifact
from ltx2.artifacts_schema.keys import stage_key
from ltx2.models.tiny import ensure_tiny_model
from ltx2.spec.errors import EXIT_BUG, EXIT_NO_SPACE, Ltx2Error

from .contract import BadInput, MemoryPlan, Progress, check_budget, die_with_parent, limit_data_segment
from .registry import FILE, StageContext, StageDef, Timed, input_key, stage_def


def sidecar(path: Path) -> Path:
    """A file output's record (``NAME.ltx2.json``): its cache key, size and sha256, written after the file is in
    place."""
    return path.with_name(path.name + ".ltx2.json")


def file_digest(path: Path) -> tuple[int, str]:
    """(size in bytes, sha256) of a file, read once in 1 MiB blocks (a video is small next to a render)."""
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
            size += len(block)
    return size, h.hexdigest()


def record_file(out: Path, cache_key: str, inputs: Mapping[str, str], params: Any) -> None:
    """Write the record of the finished file ``out`` (atomically: a half-written record never vouches for
    anything). Its size and sha256 let a later run tell the file is still the one made."""
    size, sha = file_digest(out)
    side = sidecar(out)
    tmp = side.with_name(side.name + ".tmp")
    tmp.write_text(json.dumps({"cache_key": cache_key, "inputs": dict(inputs), "params": params, "size": size,
                               "sha256": sha}, indent=1))
    os.replace(tmp, side)


def write_sidecar(ctx: StageContext) -> None:
    """Record a finished file output: its key, inputs, params, size and hash."""
    record_file(ctx.out, ctx.cache_key, artifact_keys(ctx.inputs), ctx.params.key_material())


def file_cached(out: Path, key: str) -> tuple[bool, str]:
    """(reusable, why not) for a file output (export, preview): its sidecar carries ``key``, and the file still
    has the size and sha256 recorded there (a truncated or edited video is never reused)."""
    side = sidecar(out)
    if not (out.exists() and side.exists()):
        return False, "not made yet"
    try:
        rec = json.loads(side.read_text())
    except (OSError, ValueError):
        return False, f"unusable (its record {side.name} is unreadable): will recompute"
    if not isinstance(rec, dict) or rec.get("cache_key") != key:
        return False, "made from other inputs"
    size, sha = rec.get("size"), rec.get("sha256")
    if not isinstance(size, int) or isinstance(size, bool) or not isinstance(sha, str):
        return False, f"unusable (its record {side.name} holds no size and sha256: an older build's): will recompute"
    try:
        now = out.stat().st_size
        if now != size:  # cheap first: a truncated file needs no hashing
            return False, f"unusable (damaged: {out.name} has {now} bytes, made with {size}): will recompute"
        got = file_digest(out)[1]
    except OSError as e:
        return False, f"unusable ({out.name} is unreadable: {e.strerror or e}): will recompute"
    if got != sha:
        return False, f"unusable (damaged: {out.name} no longer hashes to the sha256 it was made with): will recompute"
    return True, ""


def cached_state(stage: StageDef, out: Path, key: str) -> tuple[bool, str]:
    """(reusable, why not) for a stage's output."""
    if stage.output_kind is None:
        return file_cached(out, key)
    if not out.exists():
        return False, "partial: will resume" if Path(str(out) + ".partial").exists() else "not made yet"
    try:
        art = open_artifact(out)
        if art.cache_key != key:  # checked before the hashes: no need to read another key's bytes
            return False, "made from other inputs"
        art.verify()
    except ArtifactError as e:
        return False, f"unusable ({e.reason}): will recompute"
    return True, ""


def _media_file(stage: StageDef, port: str, p: Path) -> Path:
    """A file input (a port of kind "file"): it must be an existing file; the stage reads it by path."""
    p = Path(p)
    if not p.is_file():
        raise BadInput(f"{stage.name}: {port} file {p} {'is not a file' if p.exists() else 'not found'}; "
                       f"give an existing file: --in {port}=PATH")
    return p


def open_inputs(stage: StageDef, given: list[tuple[str | None, Path]]) -> dict[str, Any]:
    """Open and validate each input; ``port=PATH`` names its port, else the artifact's kind picks it (a file that
    is not an artifact goes to the stage's file port, if it has one). File inputs are given as their Path."""
    found: dict[str, Any] = {}
    file_ports = [n for n, spec in stage.inputs.items() if spec.kind == FILE]
    for port, p in given:
        if port is None and len(file_ports) == 1 and Path(p).is_file():
            port = file_ports[0]  # an artifact is a folder: a plain file can only be the media input
        if port in file_ports:
            if port in found:
                raise BadInput(f"{stage.name}: two files given for port {port} ({found[port]} and {p}); give one")
            found[port] = _media_file(stage, port, p)
            continue
        try:
            art = open_artifact(p)
        except ArtifactError as e:
            raise BadInput(str(e)) from e
        if port is None:
            ports = [n for n, spec in stage.inputs.items() if spec.kind == art.kind]
            if not ports:
                kinds = " and ".join(sorted({s.kind for s in stage.inputs.values()})) or "no artifacts"
                raise BadInput(f"{p}: is a {art.kind} artifact, but {stage.name} reads {kinds}")
            free = [n for n in ports if stage.inputs[n].many or n not in found]
            if not free:
                raise BadInput(f"{stage.name}: two {art.kind} artifacts given ({found[ports[0]].path} and {p}); "
                               f"give one, or name the port: --in PORT={p} (ports: {', '.join(stage.inputs)})")
            port = free[0]
        elif port not in stage.inputs:
            raise BadInput(f"{stage.name} has no input port {port!r}; its ports are {', '.join(stage.inputs) or 'none'}")
        spec = stage.inputs[port]
        if art.kind != spec.kind:
            raise BadInput(f"{p}: is a {art.kind} artifact, but port {port} of {stage.name} reads {spec.kind}")
        if spec.many:
            found.setdefault(port, []).append(art)
        elif port in found:
            raise BadInput(f"{stage.name}: two artifacts given for port {port} ({found[port].path} and {p}); give one")
        else:
            found[port] = art
    missing = [n for n, spec in stage.inputs.items() if n not in found and not (spec.many or spec.optional)]
    if missing:
        if all(stage.inputs[n].kind == FILE for n in missing):
            raise BadInput(f"{stage.name} needs {' and '.join(f'a file ({n})' for n in missing)}: add "
                           + " ".join(f"--in {n}=PATH" for n in missing))
        raise BadInput(f"{stage.name} needs {' and '.join(f'a {stage.inputs[n].kind} artifact ({n})' for n in missing)}:"
                       " add --in PATH.zarr")
    for n, spec in stage.inputs.items():
        if spec.many:
            found.setdefault(n, [])
    return found


def resolve_weights(stage: StageDef, weights: Mapping[str, Path] | None) -> dict[str, Path]:
    """The weight files of the stage's roles; by default the embedded tiny model (made on first use)."""
    weights = dict(weights or {})
    patterns = stage.all_weight_roles
    unknown = [r for r in weights if not any(fnmatch.fnmatchcase(r, pat) for pat in patterns)]
    if unknown:
        raise BadInput(f"{stage.name} reads no {', '.join(unknown)} weights; it reads {', '.join(patterns) or 'none'}")
    missing = [r for r in stage.weights if r not in weights]
    if missing:
        tiny = ensure_tiny_model()
        for r in missing:
            weights[r] = tiny[r]
    for role, path in weights.items():
        if not Path(path).exists():
            raise BadInput(f"{stage.name}: weight file for {role} not found: {path}")
    return {r: Path(p) for r, p in weights.items()}


def artifact_keys(inputs: Mapping[str, Any]) -> dict[str, str]:
    """Input artifact name -> key, as a cache key records its inputs; a file input enters as its port -> the
    file's sha256 (so the same content under another name or folder keeps the key)."""
    out: dict[str, str] = {}
    for port, a in inputs.items():
        if isinstance(a, Path):
            out[port] = input_key(a)
            continue
        for art in (a if isinstance(a, list) else [a]):
            out[art.path.name] = art.cache_key
    return out


def execute(name: str, inputs: list[tuple[str | None, Path]], out: Path, params: dict[str, Any],
            weights: dict[str, Path] | None, cache_key: str | None, budget: int | None,
            progress_fd: int | None, recompute: bool = False, outcome: dict[str, Any] | None = None) -> int:
    """Run one stage in this process; returns the contract's exit code. ``recompute``: run even when ``out`` is
    already made with this key (it is replaced only once the new output is complete). ``outcome`` (when given)
    gets ``reused``: whether the finished output was reused rather than computed."""
    die_with_parent()
    progress = Progress(name, progress_fd)
    try:
        stage = stage_def(name)
        arts = open_inputs(stage, inputs)
        typed = stage.parse_params(params)
        if stage.resolve is not None:
            typed = stage.resolve(arts, typed)
        weights = resolve_weights(stage, weights)
        if cache_key is None:  # a hand run records the key `ltx2 run` would give the same work
            cache_key = stage_key(stage.name, stage.version, typed.key_material(), weights, artifact_keys(arts))
        ctx = StageContext(stage, arts, Path(out), typed, weights, cache_key, budget, progress)
        ctx.inputs = {k: [Timed(x, ctx.io_seconds) for x in a] if isinstance(a, list)
                      else a if isinstance(a, Path) else Timed(a, ctx.io_seconds) for k, a in arts.items()}
        with _output_lock(ctx.out, progress):
            made = cached_state(stage, ctx.out, cache_key)[0]
            if made and not recompute:  # made meanwhile (another run, or an orphan)
                progress.emit("done", reused=True)
                if outcome is not None:
                    outcome["reused"] = True
                return 0
            if stage.check is not None:
                stage.check(ctx)
            plan: MemoryPlan = stage.estimate(ctx)
            progress.emit("plan", weights_bytes=plan.weights_bytes, activations_bytes=plan.activations_bytes,
                          baseline_bytes=plan.baseline_bytes)
            check_budget(name, plan, budget, stage.budget_fix)
            limit_data_segment(budget)
            progress.emit("start", since_process_start=round(time.time() - psutil.Process().create_time(), 3))
            t0 = time.perf_counter()
            if stage.output_kind is None and not made:
                sidecar(ctx.out).unlink(missing_ok=True)  # the old record must not vouch for a file being replaced
            stage.run(ctx)
            if stage.output_kind is None:
                write_sidecar(ctx)
            progress.emit("done", run_s=round(time.perf_counter() - t0, 3), io_s=round(ctx.io_seconds[0], 3))
        return 0
    except Ltx2Error as e:
        progress.emit("error", message=str(e), code=e.exit_code)
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            return _bug(name, e, progress)
        msg = (f"{name}: no space left on the device writing {e.filename or out}; free some space, then run the "
               "same command again: what was written so far is kept and resumes")
        progress.emit("error", message=msg, code=EXIT_NO_SPACE)
        print(f"error: {msg}", file=sys.stderr)
        return EXIT_NO_SPACE
    except MemoryError as e:
        progress.emit("error", message=f"{name} ran out of memory: {e}", code=75)
        print(f"error: {name} ran out of memory", file=sys.stderr)
        return 75
    except Exception as e:  # noqa: BLE001 - a bug: show the trace, exit 1
        return _bug(name, e, progress)
    finally:
        progress.close()


def _bug(name: str, e: BaseException, progress: Progress) -> int:
    """An error nobody raised on purpose: its trace goes to the stage log, exit 1."""
    traceback.print_exc()
    progress.emit("error", message=f"{name} failed with a bug: {type(e).__name__}: {e}", code=EXIT_BUG)
    return EXIT_BUG


def _output_lock(out: Path, progress: Progress):
    """Hold the output's lock for the whole stage: no two processes ever write one artifact."""
    try:
        return ArtifactLock(out, timeout=0).acquire()
    except ArtifactError:
        progress.emit("waiting", message=f"{out.name} is being written by another process; waiting for it")
        return ArtifactLock(out, timeout=None)
