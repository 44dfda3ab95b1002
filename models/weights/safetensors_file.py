"""Reading the official single-file checkpoint (and any safetensors file) one tensor at a time.

The real checkpoint holds every component (~43 GB in bf16); a stage must read only its own
prefixes. We parse the safetensors header ourselves and memory-map just the byte ranges of the
tensors asked for, so no other tensor is ever touched.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path

import mlx.core as mx
import numpy as np

from ltx2.spec.errors import BadInputError

from . import fp8

# safetensors dtype tag -> numpy dtype of the stored bytes (bf16 / fp8 are read as raw bits)
_STORED = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16,
    "F8_E4M3": np.uint8, "F8_E5M2": np.uint8,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}


class CheckpointError(BadInputError):
    """A weight file is unreadable, truncated, or does not hold what the caller needs."""


@dataclass(frozen=True)
class TensorInfo:
    dtype: str  # safetensors tag, e.g. "BF16"
    shape: tuple[int, ...]
    begin: int  # absolute byte offset in the file
    end: int
    scale: "TensorInfo | None" = None  # fp8: the stored weight scale this tensor is multiplied by (fp8.py)
    scale_key: str | None = None

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


@dataclass(frozen=True)
class SafetensorsHeader:
    path: Path
    metadata: dict[str, str]
    tensors: dict[str, TensorInfo]  # the parameters; fp8 scales are attached to the tensors they scale
    companions: dict[str, TensorInfo] = field(default_factory=dict)  # fp8 scales consumed by fold_scales

    @property
    def size(self) -> int:
        return self.path.stat().st_size

    def truncated(self) -> list[str]:
        """Tensors whose bytes lie past the end of the file (an interrupted download)."""
        size = self.size
        every = {**self.tensors, **self.companions}
        return [k for k, t in every.items() if t.end > size]

    def keys_with_prefix(self, prefix: str) -> list[str]:
        return [k for k in self.tensors if k.startswith(prefix)]

    def config(self) -> dict:
        """The JSON config the official checkpoints carry in ``__metadata__["config"]``."""
        raw = self.metadata.get("config")
        if raw is None:
            raise CheckpointError(f"{self.path}: no 'config' entry in the safetensors metadata; "
                                  "an official LTX-2 checkpoint carries its model config there")
        return json.loads(raw)


_MAX_HEADER = 100 << 20  # the safetensors format caps its JSON header at 100 MB
_REDOWNLOAD = "the file is damaged or not a safetensors file; re-download it (or give the right file)"


def _json_type(value: object) -> str:
    if value is None:
        return "JSON null"
    name = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "a JSON " + name.get(type(value), type(value).__name__)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _tensor_info(path: Path, key: str, entry: object, base: int) -> TensorInfo:
    """One header entry, checked: a name maps to {dtype, shape, data_offsets} (begin <= end, byte count right)."""
    def bad(problem: str) -> CheckpointError:
        return CheckpointError(f"{path}: in the safetensors header, tensor {key!r} {problem}: {_REDOWNLOAD}")

    if not isinstance(entry, dict):
        raise bad(f"is described by {_json_type(entry)}, not an object with dtype, shape and data_offsets")
    for field_name in ("dtype", "shape", "data_offsets"):
        if field_name not in entry:
            raise bad(f"has no {field_name}")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str):
        raise bad(f"has dtype {dtype!r}, not a dtype name such as 'BF16'")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise bad(f"has shape {shape!r}, not a list of sizes")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(o) for o in offsets)
            and offsets[0] <= offsets[1]):
        raise bad(f"has data_offsets {offsets!r}, not [begin, end] byte offsets with begin <= end")
    stored = _STORED.get(dtype)
    if stored is not None:  # (another dtype is refused when read, naming it)
        need = math.prod(shape) * np.dtype(stored).itemsize
        if offsets[1] - offsets[0] != need:
            raise bad(f"({dtype}, shape {shape}) needs {need} bytes but its data_offsets {offsets} span "
                      f"{offsets[1] - offsets[0]}")
    return TensorInfo(dtype, tuple(shape), base + offsets[0], base + offsets[1])


def read_header(path: str | Path) -> SafetensorsHeader:
    """The header of a safetensors file, checked (a damaged or foreign file raises CheckpointError naming it)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weight file")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: {size} bytes is too short to be a safetensors file")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise CheckpointError(f"{path}: header claims {n} bytes but the file has {size}: truncated or not safetensors")
        if n > _MAX_HEADER:
            raise CheckpointError(f"{path}: header claims {n} bytes, more than the 100 MB safetensors allows: "
                                  f"{_REDOWNLOAD}")
        try:
            header = json.loads(f.read(n))
        except ValueError as e:  # JSONDecodeError, or bytes that are not UTF-8
            raise CheckpointError(f"{path}: header is not valid JSON ({e}): not a safetensors file; re-download it "
                                  "(or give the right file)") from e
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: the safetensors header is {_json_type(header)}, not an "
                              f"object naming each tensor's dtype, shape and data_offsets: {_REDOWNLOAD}")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: the safetensors header's __metadata__ is {_json_type(meta)}, not an object "
                              f"of strings: {_REDOWNLOAD}")
    for k, v in meta.items():
        if not isinstance(v, str):
            raise CheckpointError(f"{path}: the safetensors header's __metadata__ entry {k!r} is {_json_type(v)}, "
                                  f"not a string (the format holds text only): {_REDOWNLOAD}")
    base = 8 + n
    tensors = {k: _tensor_info(path, k, v, base) for k, v in header.items()}
    # A truncated file still has a readable header (config, names, shapes): the tensors past the end
    # are refused when read (load_tensors) or listed by ``truncated()`` for a header-only check.
    tensors, companions = fp8.fold_scales(tensors)
    return SafetensorsHeader(path, meta, tensors, companions)


def _to_mx(raw: np.ndarray, dtype_tag: str, dtype: mx.Dtype | None) -> mx.array:
    if dtype_tag == "BF16":
        arr = mx.array(raw).view(mx.bfloat16)
    elif dtype_tag == "F8_E4M3":
        arr = mx.from_fp8(mx.array(raw), dtype=dtype or mx.bfloat16)
    elif dtype_tag == "F8_E5M2":
        raise CheckpointError("F8_E5M2 tensors are not supported (official LTX-2 fp8 files use E4M3)")
    else:
        arr = mx.array(raw)
    if dtype is not None and arr.dtype != dtype and mx.issubdtype(arr.dtype, mx.floating):
        arr = arr.astype(dtype)
    return arr


def require_complete(header: SafetensorsHeader, key: str, info: TensorInfo, size: int | None = None) -> None:
    """Refuse a tensor whose bytes lie past the end of the file (an interrupted download)."""
    size = header.size if size is None else size
    if info.end > size:
        raise CheckpointError(f"{header.path}: tensor {key!r} ends at byte {info.end} but the "
                              f"file has {size} bytes: the file is truncated (re-download it)")


def load_tensors(header: SafetensorsHeader, keys: list[str], dtype: mx.Dtype | None = mx.float32) -> dict[str, mx.array]:
    """Read exactly ``keys`` from the file (floating tensors cast to ``dtype``; None keeps the stored dtype).

    fp8 (E4M3) tensors are decoded exactly; a scaled one is multiplied by its weight scale first (fp8.py)."""
    missing = [k for k in keys if k not in header.tensors]
    if missing:
        raise CheckpointError(f"{header.path}: missing tensors {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    size = header.size
    for k in keys:
        info = header.tensors[k]
        require_complete(header, k, info, size)
        if info.scale is not None:
            require_complete(header, info.scale_key, info.scale, size)
    mm = np.memmap(header.path, dtype=np.uint8, mode="r")

    def read(k: str, info: TensorInfo, as_dtype):
        stored = _STORED.get(info.dtype)
        if stored is None:
            raise CheckpointError(f"{header.path}: tensor {k!r} has unsupported dtype {info.dtype}")
        raw = np.frombuffer(mm[info.begin:info.end], dtype=stored).reshape(info.shape)
        return _to_mx(np.array(raw), info.dtype, as_dtype)  # np.array: copy out of the map

    out = {}
    for k in keys:
        info = header.tensors[k]
        if info.scale is None:
            out[k] = read(k, info, dtype)
        else:  # scaled fp8: dequantise in float32, then the compute dtype (bf16 when none is asked for)
            values, scale = read(k, info, mx.float32), read(info.scale_key, info.scale, mx.float32)
            misfit = fp8.scale_misfit(tuple(values.shape), tuple(scale.shape))
            if misfit:
                raise CheckpointError(f"{k}: {misfit}")
            out[k] = fp8.dequantize(values, scale).astype(dtype or mx.bfloat16)
    del mm
    return out


def load_prefix(path: str | Path, prefix: str, dtype: mx.Dtype | None = mx.float32,
                strip: bool = True) -> tuple[dict[str, mx.array], SafetensorsHeader]:
    """All tensors under ``prefix`` (and only those), with the prefix removed when ``strip``."""
    header = read_header(path)
    keys = header.keys_with_prefix(prefix)
    if not keys:
        raise CheckpointError(f"{header.path}: no tensors under {prefix!r}; is this the right file for this component?")
    raw = load_tensors(header, keys, dtype)
    if strip:
        raw = {k[len(prefix):]: v for k, v in raw.items()}
    return raw, header
