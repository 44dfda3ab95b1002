"""Writing an artifact atomically, optionally resuming a partial one after a crash.

Everything is written into ``NAME.zarr.partial/``; ``finalize()`` records the hashes, facts and
a ``complete`` marker, seals the attributes with their own hash (hashing.py), then renames the
directory to ``NAME.zarr``. Readers refuse partials.

Two ways to make progress durable, both through ``checkpoint(step, ...)``:

- Snapshots (denoise / refine): ``checkpoint(step, arrays={"video": v, "audio": a}, facts=...)``
  writes the state into a fresh ``_steps/<step>/`` folder, fsyncs it, then atomically replaces
  the group attrs to point at it, then deletes the previous step's folder. A kill -9 at any
  instant leaves the attrs pointing at a fully written step: the previous one or the new one.
- Streams (tiled decode): ``create_array`` + ``write_frames`` append time steps in order straight
  into the final array; ``checkpoint`` fsyncs them and records how many are durable, so a
  resumed writer continues from there (chunks already recorded are never rewritten).

A stage that does not resume constructs the writer with ``resume=False`` (the default), which
discards any stale partial. With ``resume=True`` a partial with the same schema, kind and cache
key is continued; any other partial is discarded (``writer.discarded`` says why).
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import zarr

from . import dtypes
from .errors import ArtifactError
from .files import (fsync_dir, fsync_file, fsync_tree, is_partial_name, partial_path, remove_stray_temp_files,
                    remove_tree, replace_dir)
from .hashing import ATTRS_HASH, BlockHasher, attrs_sha256, hash_array, sha256_of, take_time
from .kinds import KINDS, SCHEMA_NAME, SCHEMA_VERSION, ArraySpec, chunk_shape
from .records import ArrayRecord, Producer, Progress, check_json
from .store import (array_sha256_from_store, create_array, open_array, read_group_attrs, read_time_range,
                    write_region)
from .validate import array_problems, content_problems, unknown_kind

STEPS_DIR = "_steps"


class ArtifactWriter:
    def __init__(self, path: str | Path, kind: str, *, producer: Producer, cache_key: str,
                 input_keys: dict[str, str] | None = None, params: dict | None = None, resume: bool = False):
        self.path = Path(path)
        self.partial = partial_path(self.path)
        if is_partial_name(self.path):
            raise self._bug(f"the writer takes the final artifact path, not a partial ({self.path.name})")
        if kind not in KINDS:
            raise self._bug(unknown_kind(kind))
        self.kind = KINDS[kind]
        self.producer = producer
        self._header = {"schema": SCHEMA_NAME, "schema_version": SCHEMA_VERSION, "kind": kind,
                        "producer": producer.to_json(), "cache_key": str(cache_key),
                        "input_keys": dict(input_keys or {}), "params": dict(params or {})}
        check_json(self.path, "the header (producer, cache key, input keys, params)", self._header)

        self._records: dict[str, ArrayRecord] = {}   # arrays at their final place (whole or streamed)
        self._snapshot: dict[str, ArrayRecord] = {}  # arrays of the last checkpoint, under _steps/
        self._slot: str | None = None
        self._hashers: dict[str, BlockHasher | None] = {}
        self._zarrays: dict[str, zarr.Array] = {}
        self._dirty: set[str] = set()                # arrays written since the last checkpoint
        self._progress: Progress | None = None
        self._complete_on_disk = False               # a finished partial whose rename a crash cut off
        self._finalized = False
        self.resumed = False
        self.discarded: str | None = None            # why an existing partial was thrown away

        if self.partial.exists():
            why = self._resume() if resume else "this stage does not resume"
            if why is None:
                self.resumed = True
            else:
                self.discarded = why
                remove_tree(self.partial)
        if not self.resumed:
            self.partial.parent.mkdir(parents=True, exist_ok=True)
            self._group = zarr.open_group(store=str(self.partial), mode="w", zarr_format=3)
            self._write_attrs({"complete": False, "progress": None})
            fsync_dir(self.partial.parent)

    # ---- what a resumed stage asks ------------------------------------------------------------
    @property
    def progress(self) -> Progress | None:
        """The last durable checkpoint (None for a fresh partial)."""
        return self._progress

    @property
    def complete(self) -> bool:
        """True when a resumed partial was already finished: just call finalize()."""
        return self._complete_on_disk

    def frames_written(self, name: str) -> int:
        rec = self._records.get(name)
        return 0 if rec is None else rec.written

    def load_checkpoint(self, numpy: bool = False) -> dict:
        """The arrays snapshotted by the last checkpoint, hash-checked, as MLX (or numpy) arrays."""
        out = {}
        for name, rec in self._snapshot.items():
            # (an interrupted finalize may already have moved it to its final place)
            src = rec if (self.partial / rec.path).exists() else replace(rec, location="")
            stored = read_time_range(self.partial, open_array(self.partial, src), src, 0, src.length)
            convert = dtypes.to_numpy if numpy else dtypes.to_mlx
            out[name] = convert(stored, rec.logical_dtype)
        return out

    # ---- writing ------------------------------------------------------------------------------
    def write_array(self, name: str, data, logical_dtype: str | None = None) -> None:
        """Write a whole array in one go (hashed from memory as it is written)."""
        spec = self._spec(name)
        if name in self._snapshot:
            raise self._bug(f"array '{name}' is already held by a checkpoint snapshot; write it one way only")
        stored, logical = self._convert(spec, data, logical_dtype)
        rec = self._new_record(spec, stored.shape, logical, location="")
        arr = create_array(self._group, rec, spec)
        write_region(arr, rec, 0, stored)
        rec.sha256, rec.chunk_sha256 = hash_array(stored, rec.time_axis, rec.chunk_time)
        rec.written = rec.length
        self._records[name] = rec
        self._zarrays[name] = arr
        self._hashers.pop(name, None)
        self._dirty.add(name)

    def create_array(self, name: str, shape: tuple[int, ...], logical_dtype: str) -> None:
        """Declare an array filled later in time order by write_frames (a no-op after a resume)."""
        spec = self._spec(name)
        if spec.time_axis is None:
            raise self._bug(f"array '{name}' has no time axis; write it whole with write_array")
        shape = tuple(int(d) for d in shape)
        problems = array_problems(spec, self.kind.name, shape, logical_dtype)
        if problems:
            raise self._bug("; ".join(problems))
        old = self._records.get(name)
        if old is not None:
            if old.shape == shape and old.logical_dtype == logical_dtype:
                return  # resumed stream: keep what is durable
            raise self._bug(f"array '{name}' already exists with shape {old.shape} {old.logical_dtype}")
        rec = self._new_record(spec, shape, logical_dtype, location="")
        self._zarrays[name] = create_array(self._group, rec, spec)
        self._records[name] = rec
        self._hashers[name] = BlockHasher()
        self._dirty.add(name)

    def write_frames(self, name: str, start: int, data) -> None:
        """Append time steps [start, start + n) to a streamed array; start must be frames_written()."""
        rec = self._records.get(name)
        if rec is None:
            raise self._bug(f"array '{name}' was not declared with create_array")
        if rec.sha256 is not None:
            raise self._bug(f"array '{name}' is already complete ({rec.length} time steps)")
        if start != rec.written:
            raise self._bug(f"array '{name}': frames must be appended in order; next is {rec.written}, got {start}")
        stored, _ = self._convert(self._spec(name), data, rec.logical_dtype)
        ax, ct = rec.time_axis, rec.chunk_time
        n = stored.shape[ax]
        want = rec.shape[:ax] + (n,) + rec.shape[ax + 1:]
        if stored.shape != want or start + n > rec.length:
            raise self._bug(f"array '{name}': frames {start}:{start + n} of shape {stored.shape} do not fit "
                            f"{rec.shape} (expected {want})")
        if (start + n) % ct and start + n != rec.length:
            raise self._bug(f"array '{name}': writes must end on a chunk boundary ({ct} steps) or at the end")
        arr = self._zarr(name)
        write_region(arr, rec, start, stored)
        hasher = self._hashers.get(name)  # None after a resume: finalize hashes the whole from the store
        for s in range(0, n, ct):
            block = take_time(stored, ax, s, s + ct)
            rec.chunk_sha256.append(hasher.add(block) if hasher is not None else sha256_of(block))
        rec.written = start + n
        if rec.written == rec.length and hasher is not None:
            rec.sha256 = hasher.sha256
        self._dirty.add(name)

    def checkpoint(self, step: int, arrays: dict | None = None, facts: dict | None = None,
                   extra: dict | None = None) -> None:
        """Make everything written so far durable, and record ``step`` as completed.

        ``arrays`` (optional) is the state to snapshot for this step; ``facts`` are merged into the
        facts of earlier checkpoints (they become the artifact's facts at finalize); ``extra`` is
        any small JSON the stage wants back on resume.
        """
        step = int(step)
        if self._progress is not None and step <= self._progress.step:
            raise self._bug(f"checkpoint step {step} is not after the last one ({self._progress.step})")
        facts = {**(self._progress.facts if self._progress else {}), **(facts or {})}
        extra = dict(extra or {})
        check_json(self.partial, "checkpoint facts", facts)
        check_json(self.partial, "checkpoint extra", extra)
        old_slot = self._slot
        snapshot, slot = self._snapshot, self._slot
        if arrays:
            slot, snapshot = f"{STEPS_DIR}/{step:06d}", {}
            remove_tree(self.partial / slot)  # left by a crash while writing this very step
            for name, data in arrays.items():
                spec = self._spec(name)
                if name in self._records:
                    raise self._bug(f"array '{name}' was written directly; snapshot it or write it, not both")
                stored, logical = self._convert(spec, data, None)
                rec = self._new_record(spec, stored.shape, logical, location=f"{slot}/{name}")
                write_region(create_array(self._group, rec, spec), rec, 0, stored)
                rec.sha256, rec.chunk_sha256 = hash_array(stored, rec.time_axis, rec.chunk_time)
                rec.written = rec.length
                snapshot[name] = rec
            fsync_tree(self.partial / STEPS_DIR)
        for name in sorted(self._dirty):
            fsync_tree(self.partial / self._records[name].path)
        fsync_dir(self.partial)
        progress = {"step": step, "facts": facts, "extra": extra, "slot": slot,
                    "snapshot": {n: r.to_json(partial=True) for n, r in snapshot.items()},
                    "arrays": {n: r.to_json(partial=True) for n, r in self._records.items()}}
        self._write_attrs({"complete": False, "progress": progress})  # the commit point
        self._snapshot, self._slot, self._dirty = snapshot, slot, set()
        self._progress = self._progress_of(progress)
        if old_slot is not None and old_slot != slot:
            remove_tree(self.partial / old_slot)

    def finalize(self, facts: dict | None = None) -> Path:
        """Check the artifact against its kind, record hashes and facts, mark it complete, rename it."""
        if self._finalized:
            raise self._bug("finalize() was already called")
        if self._complete_on_disk:
            replace_dir(self.partial, self.path)
            self._finalized = True
            return self.path
        facts = {**(self._progress.facts if self._progress else {}), **(facts or {})}
        check_json(self.partial, "facts", facts)
        for rec in self._records.values():
            if rec.written < rec.length:
                raise self._bug(f"array '{rec.name}' has only {rec.written} of {rec.length} time steps written")
        final = {**self._records, **{n: replace(r, location="") for n, r in self._snapshot.items()}}
        problems = content_problems(self.kind, final, facts)
        if problems:
            raise self._bug("; ".join(problems))
        for name, rec in self._snapshot.items():
            src, dst = self.partial / rec.path, self.partial / name
            if src.exists():  # (a crash during an earlier finalize may have moved it already)
                remove_tree(dst)
                os.rename(src, dst)
        remove_tree(self.partial / STEPS_DIR)
        for name, rec in final.items():
            if rec.sha256 is None:  # stream whose running hash was lost to a resume
                rec.sha256 = array_sha256_from_store(self.partial, self._zarr(name), rec)
        body = {"facts": facts, "arrays": {n: r.to_json() for n, r in final.items()}, "complete": True}
        body[ATTRS_HASH] = attrs_sha256({**self._header, **body})  # seals every attribute, not only the arrays
        self._write_attrs(body, sync=False)
        remove_stray_temp_files(self.partial)
        fsync_tree(self.partial)
        replace_dir(self.partial, self.path)
        self._finalized = True
        return self.path

    def discard(self) -> None:
        """Throw the partial away (e.g. a stage failed in a way that makes it useless)."""
        remove_tree(self.partial)
        self._finalized = True

    # ---- internals ----------------------------------------------------------------------------
    def _bug(self, problem: str) -> ArtifactError:
        return ArtifactError(self.path, problem, f"this is a bug in the stage that writes it "
                             f"({getattr(getattr(self, 'producer', None), 'stage', '?')}); report it", "bad_write")

    def _spec(self, name: str) -> ArraySpec:
        spec = self.kind.array(name)
        if spec is None:
            raise self._bug(f"kind {self.kind.name} has no array '{name}' "
                            f"(its arrays: {', '.join(self.kind.by_name)})")
        return spec

    def _convert(self, spec: ArraySpec, data, logical: str | None) -> tuple[np.ndarray, str]:
        try:
            stored, logical = dtypes.to_stored(data, logical)
        except ValueError as e:
            raise self._bug(f"array '{spec.name}': {e}") from e
        problems = array_problems(spec, self.kind.name, stored.shape, logical)
        if problems:
            raise self._bug("; ".join(problems))
        return stored, logical

    def _new_record(self, spec: ArraySpec, shape, logical: str, location: str) -> ArrayRecord:
        shape = tuple(int(d) for d in shape)
        chunks = chunk_shape(spec, shape)
        ct = chunks[spec.time_axis] if spec.time_axis is not None else 1
        return ArrayRecord(name=spec.name, shape=shape, logical_dtype=logical, time_axis=spec.time_axis,
                           chunk_time=ct, location=location)

    def _zarr(self, name: str) -> zarr.Array:
        if name not in self._zarrays:
            self._zarrays[name] = open_array(self.partial, self._records[name], mode="r+")
        return self._zarrays[name]

    def _write_attrs(self, body: dict, sync: bool = True) -> None:
        # zarr replaces zarr.json through a temp file + rename: readers see the old or the new attrs.
        self._group.attrs.put({**self._header, **body})
        if sync:
            fsync_file(self.partial / "zarr.json")
            fsync_dir(self.partial)

    def _progress_of(self, p: dict) -> Progress:
        return Progress(step=int(p["step"]), facts=dict(p["facts"]), extra=dict(p["extra"]),
                        arrays=tuple(p["snapshot"]),
                        frames_written={n: int(r["written"]) for n, r in p["arrays"].items()})

    def _resume(self) -> str | None:
        """Adopt the existing partial, or return why it cannot be continued."""
        try:
            attrs = read_group_attrs(self.partial)
        except ArtifactError as e:
            return f"the partial is unreadable ({e.problem})"
        for key in ("schema", "schema_version", "kind", "cache_key"):
            if attrs.get(key) != self._header[key]:
                return f"the partial's {key} is {attrs.get(key)!r}, this run's is {self._header[key]!r}"
        self._group = zarr.open_group(store=str(self.partial), mode="r+", zarr_format=3)
        if attrs.get("complete") is True:
            self._complete_on_disk = True
            return None
        p = attrs.get("progress")
        if not p:
            return "the partial has no checkpoint to resume from"
        try:
            records = {n: ArrayRecord.from_json(n, r, self.partial) for n, r in p["arrays"].items()}
            snapshot = {n: ArrayRecord.from_json(n, r, self.partial) for n, r in p["snapshot"].items()}
            progress = self._progress_of(p)
        except (ArtifactError, KeyError, TypeError, ValueError) as e:
            return f"the partial's progress record is malformed ({e})"
        remove_stray_temp_files(self.partial)
        # Whatever the last checkpoint does not reference was written after it: drop it.
        keep = {"zarr.json", STEPS_DIR} | set(records) | set(snapshot)
        for entry in self.partial.iterdir():
            if entry.name not in keep:
                remove_tree(entry)
        slot = p.get("slot")
        if (self.partial / STEPS_DIR).is_dir():
            for entry in (self.partial / STEPS_DIR).iterdir():
                if entry.name != "zarr.json" and f"{STEPS_DIR}/{entry.name}" != slot:
                    remove_tree(entry)
        self._records, self._snapshot, self._slot, self._progress = records, snapshot, slot, progress
        # Streams lost their running hash; finalize recomputes it from the (chunk-checked) store.
        self._hashers = {}
        return None
