"""Reading the official single-file checkpoint (and any safetensors file) one tensor at a time.

The real checkpoint holds every component (~43 GB in bf16); a stage must read only its own
prefixes. We parse the safetensors header ourselves and memory-map just the byte ranges of the
tensors asked for, so no other tensor is ever touched.
"""

from __future__ import annotations

import json
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


def read_header(path: str | Path) -> SafetensorsHeader:
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
        try:
            header = json.loads(f.read(n))
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{path}: header is not valid JSON ({e}): not a safetensors file") from e
    meta = header.pop("__metadata__", None) or {}
    base = 8 + n
    tensors = {}
    for k, v in header.items():
        b, e = v["data_offsets"]
        tensors[k] = TensorInfo(v["dtype"], tuple(v["shape"]), base + b, base + e)
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
