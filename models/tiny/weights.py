"""Deterministic random tensors for the tiny model, and a byte-stable safetensors writer.

Each tensor is drawn from its own stream, seeded by a hash of the generator version and the
tensor's checkpoint key, so adding or removing one tensor leaves every other unchanged. The
stream is PCG64's raw 64-bit output (a fixed algorithm, unlike numpy's distribution methods,
which may change between numpy releases), turned into numbers here with correctly rounded IEEE
arithmetic only (no log / cos, whose last bits differ between math libraries), so the files are
the same bytes on every machine.

Scales follow the oracle's ``randomize_``: fan-in scaled normal for matrices and convolutions
(fan-in = everything but the first PyTorch axis), ~1 for norm weights, small biases, registers
uniform in [-1, 1], latent statistics with std in [0.5, 1.5] and small means.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from pathlib import Path

import numpy as np


def _stream(tag: str, key: str, n: int) -> np.ndarray:
    """``n`` raw uint64 values for (tag, key)."""
    seed = int.from_bytes(hashlib.sha256(f"{tag}\0{key}".encode()).digest()[:16], "little")
    return np.random.PCG64(seed).random_raw(n).astype(np.uint64)


def uniform(tag: str, key: str, shape: tuple[int, ...]) -> np.ndarray:
    """Uniform in [0, 1), float64."""
    n = math.prod(shape)
    return ((_stream(tag, key, n) >> np.uint64(11)).astype(np.float64) * 2.0 ** -53).reshape(shape)


_SUMMED = 6  # uniforms per normal value


def normal(tag: str, key: str, shape: tuple[int, ...]) -> np.ndarray:
    """Approximately standard normal, float64: (sum of 6 uniforms - 3) * sqrt(2) has mean 0, variance 1
    and a bell shape within +-4.2, which is all random weights need. Element-wise adds in a fixed
    order, so the result does not depend on how numpy vectorises a sum."""
    n = math.prod(shape)
    u = ((_stream(tag, key, _SUMMED * n) >> np.uint64(11)).astype(np.float64) * 2.0 ** -53).reshape(_SUMMED, n)
    acc = u[0].copy()
    for row in u[1:]:
        acc += row
    return ((acc - _SUMMED / 2) * math.sqrt(12 / _SUMMED)).reshape(shape)


def init_tensor(tag: str, key: str, shape: tuple[int, ...], *, norm_offset: float = 1.0) -> np.ndarray:
    """A well-scaled float32 tensor for checkpoint ``key`` (PyTorch layout ``shape``).

    ``norm_offset``: the centre of norm weights (1 where the norm multiplies by ``w``; 0 for Gemma,
    whose RMSNorm multiplies by ``1 + w``)."""
    name = key.rsplit(".", 1)[-1]
    if len(shape) == 0:
        raise ValueError(f"{key}: scalar tensors have fixed values, not random ones; give its value explicitly")
    if key.endswith("std-of-means"):
        x = 0.5 + uniform(tag, key, shape)
    elif key.endswith("mean-of-means"):
        x = 0.2 * normal(tag, key, shape)
    elif "learnable_registers" in key:
        x = uniform(tag, key, shape) * 2.0 - 1.0
    elif len(shape) >= 2:
        x = normal(tag, key, shape) / math.sqrt(math.prod(shape[1:]))
    elif name == "weight" and "norm" in key:
        x = norm_offset + 0.1 * normal(tag, key, shape)
    else:
        x = 0.1 * normal(tag, key, shape)
    return x.astype(np.float32)


# --------------------------------------------------------------------------------------------- writing
_DTYPES = {"F32": np.float32}


def to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits (round to nearest even), as uint16."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + np.uint64(0x7FFF) + ((bits >> np.uint64(16)) & np.uint64(1))) >> np.uint64(16)
    return rounded.astype(np.uint16)


def write_safetensors(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str],
                      dtype: str = "BF16") -> None:
    """Write ``tensors`` (float32 arrays; stored as ``dtype``) in key order, with ``metadata``.

    Written by hand so the bytes depend only on the inputs: sorted keys, compact JSON, the header
    padded with spaces to 8 bytes as the format allows."""
    header: dict = {"__metadata__": dict(sorted(metadata.items()))}
    blobs, offset = [], 0
    for key in sorted(tensors):
        x = tensors[key]
        raw = to_bf16_bits(x) if dtype == "BF16" else np.ascontiguousarray(x, dtype=_DTYPES[dtype])
        data = raw.tobytes()
        header[key] = {"dtype": dtype, "shape": list(x.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode()
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for b in blobs:
            f.write(b)
