"""The Zarr v3 layer: create arrays the way the kinds say, read time ranges with hash checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from .dtypes import STORED
from .errors import FIX_DELETE, ArtifactError
from .hashing import BlockHasher, sha256_of, take_time
from .kinds import ArraySpec
from .records import ArrayRecord


def read_group_attrs(path: Path) -> dict:
    """The attributes of the Zarr v3 group at ``path``, read straight from its zarr.json."""
    meta = path / "zarr.json"
    if not meta.is_file():
        raise ArtifactError(path, "is not a Zarr v3 group (no zarr.json)", FIX_DELETE, "not_artifact")
    try:
        doc = json.loads(meta.read_text())
    except (OSError, ValueError) as e:
        raise ArtifactError(path, f"its zarr.json is unreadable ({e})", FIX_DELETE, "not_artifact") from e
    if doc.get("zarr_format") != 3 or doc.get("node_type") != "group":
        raise ArtifactError(path, f"is not a Zarr v3 group (zarr_format={doc.get('zarr_format')!r}, "
                            f"node_type={doc.get('node_type')!r})", FIX_DELETE, "not_artifact")
    attrs = doc.get("attributes", {})
    if not isinstance(attrs, dict):
        raise ArtifactError(path, "its group attributes are not a JSON object", FIX_DELETE, "not_artifact")
    return attrs


def create_array(group: zarr.Group, rec: ArrayRecord, spec: ArraySpec) -> zarr.Array:
    chunks = [max(1, d) for d in rec.shape]
    if rec.time_axis is not None:
        chunks[rec.time_axis] = rec.chunk_time
    return group.create_array(
        name=rec.path, shape=rec.shape, dtype=STORED[rec.logical_dtype], chunks=tuple(chunks),
        compressors=(ZstdCodec(level=1),) if spec.compress else None,
        attributes={"logical_dtype": rec.logical_dtype, "time_axis": rec.time_axis},
        # Every chunk gets a file, even an all-zero one: simpler to reason about on resume and tamper.
        config={"write_empty_chunks": True}, overwrite=True)


def write_region(arr: zarr.Array, rec: ArrayRecord, start: int, data: np.ndarray) -> None:
    if rec.time_axis is None:
        arr[...] = data
        return
    index = [slice(None)] * len(rec.shape)
    index[rec.time_axis] = slice(start, start + data.shape[rec.time_axis])
    arr[tuple(index)] = data


def open_array(group_path: Path, rec: ArrayRecord, mode: str = "r") -> zarr.Array:
    """The zarr array of ``rec``, checked against what the group attrs say about it."""
    where = group_path
    folder = (group_path / rec.path).resolve()
    if not folder.is_relative_to(group_path.resolve()):  # a linked array folder: another artifact's bytes
        raise ArtifactError(where, f"array '{rec.name}' is a link to {folder}, outside the artifact", FIX_DELETE,
                            "invalid")
    try:
        arr = zarr.open_array(store=str(group_path / rec.path), mode=mode, zarr_format=3)
    except Exception as e:  # zarr raises several types for a missing / broken array
        raise ArtifactError(where, f"missing array '{rec.name}' (no readable Zarr array at "
                            f"{rec.path}/: {type(e).__name__})", FIX_DELETE, "invalid") from e
    problems = []
    if tuple(arr.shape) != tuple(rec.shape):
        problems.append(f"shape {tuple(arr.shape)} but the attrs record {tuple(rec.shape)}")
    if arr.dtype != STORED[rec.logical_dtype]:
        problems.append(f"stored dtype {arr.dtype} but logical dtype {rec.logical_dtype} is stored as "
                        f"{STORED[rec.logical_dtype]}")
    if arr.attrs.get("logical_dtype") != rec.logical_dtype:
        problems.append(f"array attr logical_dtype={arr.attrs.get('logical_dtype')!r} but the group "
                        f"attrs record {rec.logical_dtype!r}")
    if rec.time_axis is not None and arr.chunks[rec.time_axis] != rec.chunk_time:
        problems.append(f"chunks {arr.chunks} do not hold {rec.chunk_time} time steps each")
    if rec.sha256 is not None and len(rec.chunk_sha256) != len(rec.blocks):
        problems.append(f"{len(rec.chunk_sha256)} chunk hashes recorded for {len(rec.blocks)} chunks")
    if problems:
        raise ArtifactError(where, f"array '{rec.name}' is inconsistent: " + "; ".join(problems), FIX_DELETE,
                            "invalid")
    return arr


def _mismatch(where: Path, rec: ArrayRecord, what: str, got: str, want: str | None) -> ArtifactError:
    return ArtifactError(where, f"hash mismatch on array '{rec.name}' ({what}: stored bytes hash to "
                         f"{got[:16]}..., recorded {str(want)[:16]}...); the artifact is corrupt",
                         FIX_DELETE, "hash_mismatch")


def read_time_range(where: Path, arr: zarr.Array, rec: ArrayRecord, start: int, stop: int) -> np.ndarray:
    """Stored data for time steps [start, stop), reading only the chunks that cover them.

    Each chunk read is checked against its recorded sha256; a read of the whole array is also
    checked against the whole-array sha256.
    """
    try:
        if rec.time_axis is None:
            data = np.asarray(arr[...])
            lo, hi, first = 0, 1, 0
        else:
            ct, n = rec.chunk_time, rec.shape[rec.time_axis]
            first, last = start // ct, -(-stop // ct)
            lo, hi = first * ct, min(last * ct, n)
            index = [slice(None)] * len(rec.shape)
            index[rec.time_axis] = slice(lo, hi)
            data = np.asarray(arr[tuple(index)])
    except Exception as e:  # a tampered compressed chunk fails to decode
        raise ArtifactError(where, f"array '{rec.name}' is corrupt: its stored chunks cannot be decoded "
                            f"({type(e).__name__}: {e})", FIX_DELETE, "hash_mismatch") from e
    whole = BlockHasher() if (lo == 0 and hi == rec.length) else None
    if rec.time_axis is None:
        blocks = [(0, data)]
    else:
        blocks = [(lo // rec.chunk_time + i, take_time(data, rec.time_axis, s - lo, min(s + rec.chunk_time, hi) - lo))
                  for i, s in enumerate(range(lo, hi, rec.chunk_time))]
    for i, block in blocks:
        got = whole.add(block) if whole is not None else sha256_of(block)
        want = rec.chunk_sha256[i] if i < len(rec.chunk_sha256) else None
        if got != want:
            what = "the whole array" if rec.time_axis is None else \
                f"time steps {i * rec.chunk_time}:{min((i + 1) * rec.chunk_time, rec.length)} of {rec.length}"
            raise _mismatch(where, rec, what, got, want)
    if whole is not None and whole.sha256 != rec.sha256:
        raise _mismatch(where, rec, "whole array", whole.sha256, rec.sha256)
    return data if rec.time_axis is None else take_time(data, rec.time_axis, start - lo, stop - lo)


def array_sha256_from_store(where: Path, arr: zarr.Array, rec: ArrayRecord) -> str:
    """Whole-array sha256 of a streamed array whose running hash was lost (writer resumed).

    Reads chunk by chunk, checking each against its recorded chunk hash on the way.
    """
    whole = BlockHasher()
    for i, (s, e) in enumerate(rec.blocks):
        index = [slice(None)] * len(rec.shape)
        if rec.time_axis is not None:
            index[rec.time_axis] = slice(s, e)
        block = np.asarray(arr[tuple(index)])
        got = whole.add(block)
        if got != rec.chunk_sha256[i]:
            raise _mismatch(where, rec, f"time steps {s}:{e} written before the resume", got, rec.chunk_sha256[i])
    return whole.sha256
