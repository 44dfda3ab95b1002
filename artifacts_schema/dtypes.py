"""Logical dtypes and the one place numpy <-> MLX conversion happens.

Zarr has no bfloat16, so a bfloat16 array is stored as its raw uint16 bits and the array's
attributes say ``logical_dtype: "bfloat16"``. Every other logical dtype is stored as itself,
little-endian. MLX is imported lazily so the orchestrator can validate artifacts without it.
"""

from __future__ import annotations

import numpy as np

# logical dtype -> dtype of the stored bytes
STORED: dict[str, np.dtype] = {
    "float32": np.dtype("<f4"),
    "float16": np.dtype("<f2"),
    "bfloat16": np.dtype("<u2"),
    "uint8": np.dtype("|u1"),
    "int32": np.dtype("<i4"),
    "int64": np.dtype("<i8"),
    "bool": np.dtype("|b1"),
}


def _mx():
    import mlx.core as mx  # lazy: artifacts are numpy and zarr; MLX is needed only to convert MLX arrays
    return mx


def _mx_dtypes() -> dict[str, object]:
    mx = _mx()
    return {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16, "uint8": mx.uint8,
            "int32": mx.int32, "int64": mx.int64, "bool": mx.bool_}


def is_mlx(data: object) -> bool:
    return type(data).__module__.startswith("mlx")


def logical_of(data: object) -> str | None:
    """The logical dtype name of an MLX or numpy array, or None if artifacts cannot store it."""
    if is_mlx(data):
        for name, dt in _mx_dtypes().items():
            if data.dtype == dt:
                return name
        return None
    dt = np.asarray(data).dtype.newbyteorder("=")
    for name, stored in STORED.items():
        if name != "bfloat16" and dt == stored.newbyteorder("="):
            return name
    return None


def to_stored(data: object, logical: str | None = None) -> tuple[np.ndarray, str]:
    """Any MLX / numpy array -> (C-contiguous little-endian numpy array of the stored bytes, logical).

    With ``logical`` given, the data is cast to it first (float32 -> bfloat16 rounds to nearest
    even, through MLX). Without it the data's own dtype must be one artifacts store.
    """
    if logical is not None and logical not in STORED:
        raise ValueError(f"logical dtype {logical!r} is not one artifacts store ({sorted(STORED)})")
    own = logical_of(data)
    if logical is None:
        if own is None:
            raise ValueError(f"dtype {data.dtype} is not one artifacts store ({sorted(STORED)}); "
                             "cast it first (e.g. float64 -> float32)")
        logical = own
    if logical == "bfloat16":
        mx = _mx()
        x = data if is_mlx(data) else mx.array(np.asarray(data))
        if x.dtype != mx.bfloat16:
            x = x.astype(mx.bfloat16)
        out = np.array(x.view(mx.uint16))
    elif is_mlx(data):
        mx = _mx()
        x = data if own == logical else data.astype(_mx_dtypes()[logical])
        out = np.array(x)
    else:
        out = np.asarray(data)
    out = np.ascontiguousarray(out, dtype=STORED[logical])
    return out, logical


def to_mlx(stored: np.ndarray, logical: str):
    """Stored bytes -> MLX array in the logical dtype (bfloat16 bit for bit)."""
    mx = _mx()
    x = mx.array(np.ascontiguousarray(stored))
    return x.view(mx.bfloat16) if logical == "bfloat16" else x


def to_numpy(stored: np.ndarray, logical: str) -> np.ndarray:
    """Stored bytes -> numpy; bfloat16 becomes float32 exactly (numpy has no bfloat16)."""
    if logical == "bfloat16":
        return (stored.astype(np.uint32) << 16).view(np.float32)
    return np.asarray(stored, dtype=STORED[logical].newbyteorder("="))
