"""Memory estimates a stage makes before loading anything: weight bytes from safetensors headers."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ltx2.models.weights import read_header

COMPUTE_BYTES = 4  # float32 compute (the only exact choice on CPU; the planner issue adds bf16 / q8 / q4)


def weight_bytes(path: Path, prefixes: Iterable[str], exclude: Iterable[str] = (),
                 bytes_per_element: int = COMPUTE_BYTES) -> int:
    """Bytes the tensors under ``prefixes`` (less ``exclude``) take once loaded at the compute precision."""
    prefixes, exclude = tuple(prefixes), tuple(exclude)
    total = 0
    for key, t in read_header(path).tensors.items():
        if key.startswith(prefixes) and not key.startswith(exclude):
            n = 1
            for d in t.shape:
                n *= d
            total += n * bytes_per_element
    return total

