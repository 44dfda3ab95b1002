"""Compute precision: the widths a network's activations can be computed at (MLX-free facts).

A stage that runs a network takes ``compute`` (one of ``COMPUTE``): float32 is exact and the parity reference;
bfloat16 and float16 halve the activations (models/precision.py says how a network computes in them). A job's
``compute: auto`` becomes bfloat16 on a GPU and float32 on CPU when it is planned (orchestrator/recipes.py), so a
stage's cache key always holds the width it ran at.
"""

from __future__ import annotations

from typing import Literal

COMPUTE = ("float32", "bfloat16", "float16")
Compute = Literal["float32", "bfloat16", "float16"]
ComputeChoice = Literal["auto", "float32", "bfloat16", "float16"]  # a job's field: auto resolved when planned

_ITEMSIZE = {"float32": 4, "bfloat16": 2, "float16": 2}


def compute_itemsize(compute: str) -> int:
    """Bytes per activation element at ``compute``."""
    try:
        return _ITEMSIZE[compute]
    except KeyError:
        raise ValueError(f"compute={compute!r}: use one of {', '.join(COMPUTE)}") from None
