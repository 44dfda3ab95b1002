"""sha256 of an array's stored bytes, whole and per time chunk.

Definition (what the recorded hashes mean):
- A *block* is one chunk's worth of time steps: ``[s, s + chunk_time)`` along the time axis,
  with the full extent on every other axis (an array without a time axis is one block).
- ``chunk_sha256[i]`` is the sha256 of block i's stored bytes (stored dtype, little-endian,
  C order within the block).
- ``sha256`` is the sha256 of all blocks' bytes concatenated in time order. For a time axis of
  0 (frames) or a single block this is just the sha256 of the array's C-order bytes.
Per-block hashes let a reader verify a lazy time slice without reading the rest; the whole
hash is what ``verify()`` and a full read check. Both are computed from the bytes as they are
written, never by reading the store back (except to finish a resumed streamed array).

The group attributes of a finished artifact (kind, producer, cache and input keys, params, facts,
and the array records holding the hashes above) are covered by one more hash, ``attrs_sha256``:
the sha256 of every other attribute written as JSON with sorted keys, no whitespace, ASCII only
(``json.dumps(attrs, sort_keys=True, separators=(",", ":"), ensure_ascii=True)``). The JSON is
taken after a round trip through JSON text, so it reads the same from the stored zarr.json as it
did in the writer's hands (a tuple is a list, 24.0 stays 24.0 and 24 stays 24). A reader checks
it on open: a changed fact (fps, say) is corruption, not a new value.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np


def take_time(arr: np.ndarray, time_axis: int | None, start: int, stop: int) -> np.ndarray:
    if time_axis is None:
        return arr
    index = [slice(None)] * arr.ndim
    index[time_axis] = slice(start, stop)
    return arr[tuple(index)]


def _bytes(block: np.ndarray) -> memoryview:
    return memoryview(np.ascontiguousarray(block)).cast("B")


def sha256_of(block: np.ndarray) -> str:
    return hashlib.sha256(_bytes(block)).hexdigest()


class BlockHasher:
    """Feeds blocks in time order; keeps the per-block hashes and the running whole hash."""

    def __init__(self):
        self._whole = hashlib.sha256()
        self.chunk_sha256: list[str] = []

    def add(self, block: np.ndarray) -> str:
        data = _bytes(block)
        self._whole.update(data)
        h = hashlib.sha256(data).hexdigest()
        self.chunk_sha256.append(h)
        return h

    @property
    def sha256(self) -> str:
        return self._whole.hexdigest()


ATTRS_HASH = "attrs_sha256"


def attrs_sha256(attrs: dict) -> str:
    """The hash of an artifact's group attributes, ``attrs_sha256`` itself left out (see above)."""
    rest = json.loads(json.dumps({k: v for k, v in attrs.items() if k != ATTRS_HASH}, allow_nan=False))
    text = json.dumps(rest, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def hash_array(stored: np.ndarray, time_axis: int | None, chunk_time: int) -> tuple[str, list[str]]:
    """(whole sha256, per-block sha256 list) of an in-memory stored array."""
    hasher = BlockHasher()
    if time_axis is None:
        hasher.add(stored)
    else:
        for s in range(0, stored.shape[time_axis], chunk_time):
            hasher.add(take_time(stored, time_axis, s, s + chunk_time))
    return hasher.sha256, hasher.chunk_sha256
