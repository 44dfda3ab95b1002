"""Strict loading of a module-named weight dict into an MLX module."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_unflatten

from .safetensors_file import CheckpointError


def load_strict(module: nn.Module, weights: dict[str, mx.array], component: str) -> nn.Module:
    """Load ``weights`` (already in module naming) into ``module``; every mismatch is an error.

    Missing, unexpected or mis-shaped tensors are all reported together, each with its key and
    both shapes, so a wrong or partial checkpoint is diagnosed in one go.
    """
    expected = dict(tree_flatten(module.parameters()))
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    bad_shape = [(k, tuple(expected[k].shape), tuple(weights[k].shape))
                 for k in sorted(set(expected) & set(weights)) if tuple(expected[k].shape) != tuple(weights[k].shape)]
    if missing or unexpected or bad_shape:
        lines = [f"{component}: checkpoint does not match the model built from its config"]
        lines += [f"  missing tensor {k} (model expects shape {tuple(expected[k].shape)})" for k in missing[:20]]
        lines += [f"  unexpected tensor {k} (checkpoint shape {tuple(weights[k].shape)})" for k in unexpected[:20]]
        lines += [f"  tensor {k}: model expects shape {e}, checkpoint has {g}" for k, e, g in bad_shape[:20]]
        extra = max(0, len(missing) - 20) + max(0, len(unexpected) - 20) + max(0, len(bad_shape) - 20)
        if extra:
            lines.append(f"  ... and {extra} more")
        raise CheckpointError("\n".join(lines))
    module.update(tree_unflatten(list(weights.items())))
    return module


def conv_weight_to_mlx(w: mx.array) -> mx.array:
    """PyTorch conv weight (out, in, *kernel) -> MLX (out, *kernel, in)."""
    return mx.moveaxis(w, 1, -1)


def conv_transpose_weight_to_mlx(w: mx.array) -> mx.array:
    """PyTorch ConvTranspose weight (in, out, *kernel) -> MLX (out, *kernel, in)."""
    return mx.moveaxis(w, 0, -1)
