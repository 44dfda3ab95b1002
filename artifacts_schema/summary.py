"""What `ltx2 inspect` shows about an artifact: everything in its attrs, plus whether it verifies.

Works on finished artifacts, on partials (showing their progress) and on broken ones (showing
what is wrong next to whatever could still be read).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import zarr

from .dtypes import STORED
from .errors import ArtifactError
from .files import is_partial_name, partial_path
from .reader import open_artifact
from .records import ArrayRecord
from .store import read_group_attrs


@dataclass
class ArraySummary:
    name: str
    shape: tuple[int, ...]
    logical_dtype: str
    stored_dtype: str
    chunks: tuple[int, ...] | None
    compression: str
    nbytes: int
    sha256: str | None


@dataclass
class ArtifactSummary:
    path: str
    state: str                      # "complete", "partial" or "invalid"
    problem: str | None             # why it is invalid / unreadable
    hashes: str                     # "verified", "not checked", "mismatch: ...", "n/a (partial)"
    kind: str | None = None
    schema: str | None = None
    schema_version: int | None = None
    producer: dict | None = None
    cache_key: str | None = None
    input_keys: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    facts: dict = field(default_factory=dict)
    arrays: list[ArraySummary] = field(default_factory=list)
    progress: dict | None = None    # partials: last checkpoint step, facts, frames written

    def to_dict(self) -> dict:
        return asdict(self)


def _array_summaries(root: Path, arrays: dict) -> list[ArraySummary]:
    out = []
    for name, d in arrays.items():
        try:
            rec = ArrayRecord.from_json(name, d, root)
        except ArtifactError:
            continue
        chunks, compression = None, "?"
        try:
            arr = zarr.open_array(store=str(root / rec.path), mode="r", zarr_format=3)
            chunks = tuple(arr.chunks)
            compression = ", ".join(f"{type(c).__name__}(level={getattr(c, 'level', '?')})"
                                    for c in arr.compressors) or "none"
        except Exception:  # noqa: BLE001 - a summary shows what it can
            pass
        stored = STORED.get(rec.logical_dtype)
        out.append(ArraySummary(name=name, shape=rec.shape, logical_dtype=rec.logical_dtype,
                                stored_dtype=str(stored) if stored is not None else "?", chunks=chunks,
                                compression=compression,
                                nbytes=math.prod(rec.shape) * (stored.itemsize if stored is not None else 0),
                                sha256=rec.sha256))
    return out


def _from_attrs(s: ArtifactSummary, root: Path, attrs: dict) -> None:
    s.kind, s.schema, s.schema_version = attrs.get("kind"), attrs.get("schema"), attrs.get("schema_version")
    s.producer, s.cache_key = attrs.get("producer"), attrs.get("cache_key")
    for key in ("input_keys", "params", "facts"):
        if isinstance(attrs.get(key), dict):
            setattr(s, key, attrs[key])
    arrays = attrs.get("arrays")
    if isinstance(arrays, dict):
        s.arrays = _array_summaries(root, arrays)


def summarize(path: str | Path, verify: bool = True) -> ArtifactSummary:
    """Summarize the artifact at ``path`` (or its partial, if only that exists)."""
    path = Path(path)
    partial = path if is_partial_name(path) else (partial_path(path) if not path.exists() else None)
    if partial is not None and partial.exists():
        s = ArtifactSummary(path=str(partial), state="partial", problem=None, hashes="n/a (partial)")
        try:
            attrs = read_group_attrs(partial)
        except ArtifactError as e:
            s.problem = e.problem
            return s
        _from_attrs(s, partial, attrs)
        p = attrs.get("progress")
        if isinstance(p, dict):
            s.facts = p.get("facts", {})
            s.arrays = _array_summaries(partial, {**p.get("arrays", {}), **p.get("snapshot", {})})
            s.progress = {"step": p.get("step"), "facts": p.get("facts"), "extra": p.get("extra"),
                          "snapshot": sorted(p.get("snapshot", {})),
                          "frames_written": {n: r.get("written") for n, r in p.get("arrays", {}).items()}}
        elif attrs.get("complete") is True:
            s.progress = {"finished": True, "note": "complete but not yet renamed; a resumed writer renames it"}
        return s
    s = ArtifactSummary(path=str(path), state="complete", problem=None, hashes="not checked")
    try:
        art = open_artifact(path)
    except ArtifactError as e:
        s.state, s.problem = "invalid", e.problem
        s.hashes = f"mismatch: {e.problem}" if e.reason == "hash_mismatch" else "n/a (invalid)"
        try:
            _from_attrs(s, path, read_group_attrs(path))
        except ArtifactError:
            pass
        return s
    _from_attrs(s, path, read_group_attrs(path))
    if verify:
        try:
            art.verify()
            s.hashes = "verified"
        except ArtifactError as e:
            s.state, s.problem, s.hashes = "invalid", e.problem, f"mismatch: {e.problem}"
    return s
