"""Cache keys: a content address for every stage output, computable before anything runs.

A stage's key is the sha256 of canonical JSON holding

- the stage's name and version,
- its parameters (only those that shape its output: the canonical dump of its typed Params),
- the identity of each weight file or folder it reads,
- the keys of its input artifacts, i.e. of the stages that produce them (a Merkle chain).

Because inputs enter through their producers' keys, the keys of a whole plan follow from the job
and the weight headers alone: no artifact has to exist. An artifact whose stored key equals the
planned key is reused; a change anywhere upstream changes every key downstream of it and nothing
else.

Weight identity is cheap on purpose: a real checkpoint is tens of GB, so a ``.safetensors`` file is
identified by its size plus the sha256 of its header (the 8-byte length and the JSON that names
every tensor's dtype, shape and byte range, and holds the config metadata), not by hashing the
tensor bytes. A folder (Gemma) is identified file by file, by relative path: safetensors files as
above, other files (tokenizer, configs) by size + sha256 of their content, or of their first and last
MiB when over 64 MiB. Dot-files and dot-folders (caches, VCS data) are ignored. Paths themselves
are not part of the identity: moving the weights keeps every key.

Canonical JSON: keys sorted, no whitespace, floats that are whole numbers written as integers
(``24.0`` and ``24`` give one key), other floats in Python's shortest round-trip form, -0.0 as 0,
tuples as lists, paths as strings; NaN and infinities are refused.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from ltx2.spec.errors import BadInputError

__all__ = ["canonical_json", "digest", "weight_identity", "stage_key_material", "stage_key", "WeightFileError"]

_BIG_FILE = 64 << 20
_EDGE = 1 << 20
_MAX_HEADER = 100 << 20  # safetensors caps its JSON header at 100 MB


class WeightFileError(BadInputError):
    """A weight file or folder is missing or is not what its extension says."""


class InputFileError(BadInputError):
    """A media file a stage reads (a conditioning image, video or soundtrack) cannot be read."""


# ----------------------------------------------------------------------------- canonical JSON

def _normalise(obj: Any) -> Any:
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise ValueError(f"cannot key a non-finite number ({obj})")
        return int(obj) if obj.is_integer() else obj
    if isinstance(obj, Path):
        return obj.as_posix()
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            key = k.as_posix() if isinstance(k, Path) else str(k)
            if key in out:
                raise ValueError(f"two keys both read {key!r} once written as text")
            out[key] = _normalise(v)
        return out
    if isinstance(obj, (list, tuple)):
        return [_normalise(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted((_normalise(v) for v in obj), key=lambda v: json.dumps(v, sort_keys=True))
    if hasattr(obj, "model_dump"):  # a pydantic model
        return _normalise(obj.model_dump(mode="json"))
    if hasattr(obj, "item") and callable(obj.item):  # a numpy scalar
        return _normalise(obj.item())
    raise TypeError(f"cannot key a value of type {type(obj).__name__}: {obj!r}")


def canonical_json(obj: Any) -> str:
    return json.dumps(_normalise(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def digest(obj: Any) -> str:
    """sha256 (hex) of the canonical JSON of ``obj``."""
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()


# ----------------------------------------------------------------------------- weight identity

def _safetensors_identity(path: Path, size: int) -> dict[str, Any]:
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise WeightFileError(f"{path}: {size} bytes is too short to be a safetensors file")
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, _MAX_HEADER):
            raise WeightFileError(f"{path}: header length {n} does not fit the file ({size} bytes); "
                                  "the file is truncated or not safetensors")
        header = f.read(n)
    return {"size": size, "header_sha256": hashlib.sha256(head + header).hexdigest()}


def _content_identity(path: Path, size: int) -> dict[str, Any]:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if size <= _BIG_FILE:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
            return {"size": size, "sha256": h.hexdigest()}
        h.update(f.read(_EDGE))
        f.seek(size - _EDGE)
        h.update(f.read(_EDGE))
    return {"size": size, "head_tail_sha256": h.hexdigest()}


@lru_cache(maxsize=1024)
def _file_identity(path: str, size: int, mtime_ns: int, ctime_ns: int, inode: int) -> tuple[tuple[str, Any], ...]:
    # the stat facts are part of the memo key so a file rewritten or replaced is identified afresh
    p = Path(path)
    ident = _safetensors_identity(p, size) if p.suffix == ".safetensors" else _content_identity(p, size)
    return tuple(sorted(ident.items()))


def _identify_file(path: Path) -> dict[str, Any]:
    st = path.stat()
    return dict(_file_identity(str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino))


def weight_identity(path: Path | str) -> dict[str, Any]:
    """Identity of a weight file (size + header hash) or folder (the same, file by file)."""
    path = Path(path)
    if path.is_file():
        return _identify_file(path)
    if path.is_dir():
        files: dict[str, Any] = {}
        for root, dirs, names in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(names):
                if name.startswith("."):
                    continue
                p = Path(root) / name
                if p.is_file():
                    files[p.relative_to(path).as_posix()] = _identify_file(p)
        if not files:
            raise WeightFileError(f"{path}: the weight folder is empty")
        return {"files": files}
    raise WeightFileError(f"{path}: no such weight file or folder"
                          + (" (the tiny model is generated on first use; generate it before planning)"
                             if "tiny" in path.as_posix() else ""))


_FILE_KEYS: dict[tuple[str, int, int], str] = {}


def file_key(path: Path | str) -> str:
    """The key of a media file an encode stage reads: the sha256 of its content (so jobs that share the file, under
    any name, share the encoding). Remembered per (path, size, mtime) within a process: a plan hashes each once."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError as e:
        raise InputFileError(f"{path}: cannot be read ({e.strerror}); check the path in the job") from None
    memo = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if memo not in _FILE_KEYS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _FILE_KEYS[memo] = h.hexdigest()
    return _FILE_KEYS[memo]


# ----------------------------------------------------------------------------- stage keys

def stage_key_material(stage: str, version: int, params: Any, weights: Mapping[str, Path],
                       input_keys: Mapping[str, str],
                       identify: Callable[[Path], Any] = weight_identity) -> dict[str, Any]:
    """Everything a stage output's key is the hash of (useful to show why two keys differ).
    ``input_keys``: input artifact name -> its key."""
    return {
        "stage": stage,
        "version": version,
        "params": params,
        "weights": {role: identify(path) for role, path in weights.items()},
        "inputs": dict(input_keys),
    }


def stage_key(stage: str, version: int, params: Any, weights: Mapping[str, Path], input_keys: Mapping[str, str],
              identify: Callable[[Path], Any] = weight_identity) -> str:
    return digest(stage_key_material(stage, version, params, weights, input_keys, identify))
