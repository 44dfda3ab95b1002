"""Loading the vocoder from the official single-file checkpoint (``vocoder.*`` keys only), strictly."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten

from ..weights import conv_transpose_weight_to_mlx, conv_weight_to_mlx, load_strict, load_tensors, read_header
from ..weights.converted import is_converted, load_converted
from ..weights.safetensors_file import CheckpointError
from .config import VocoderConfig
from .generator import Vocoder

PREFIX = "vocoder."


def sanitize(weights: dict[str, mx.array]) -> dict[str, mx.array]:
    """Checkpoint names (``vocoder.`` removed) -> module names; names are kept, layouts change.

    - ``ups.N.weight``: ConvTranspose1d, PyTorch (in, out, k) -> MLX (out, k, in);
    - other 3-D ``*.weight``: Conv1d, (out, in, k) -> (out, k, in);
    - ``*.filter`` (AMP anti-aliasing FIR, stored (1, 1, taps)) -> (taps,).
    """
    out = {}
    for k, v in weights.items():
        if k.endswith(".filter"):
            v = v.reshape(-1)
        elif k.startswith("ups.") and k.endswith(".weight"):
            v = conv_transpose_weight_to_mlx(v)
        elif k.endswith(".weight") and v.ndim == 3:
            v = conv_weight_to_mlx(v)
        out[k] = v
    return out


def unsanitize(weights: dict[str, mx.array]) -> dict[str, mx.array]:
    """Module names -> checkpoint names (``vocoder.`` not added): the inverse of :func:`sanitize`,
    layouts back to PyTorch's (ConvTranspose1d (in, out, k), Conv1d (out, in, k), filters (1, 1, taps))."""
    out = {}
    for k, v in weights.items():
        if k.endswith(".filter"):
            v = v.reshape(1, 1, -1)
        elif k.startswith("ups.") and k.endswith(".weight"):
            v = mx.moveaxis(v, -1, 0)
        elif k.endswith(".weight") and v.ndim == 3:
            v = mx.moveaxis(v, -1, 1)
        out[k] = v
    return out


def to_checkpoint(model: Vocoder) -> dict[str, mx.array]:
    """The vocoder's parameters under their official single-file checkpoint keys (``vocoder.*``)."""
    return {PREFIX + k: v for k, v in unsanitize(dict(tree_flatten(model.parameters()))).items()}


def load_vocoder(path: str | Path, dtype: mx.Dtype = mx.float32) -> Vocoder:
    if is_converted(path):  # written by `ltx2 convert`
        return load_converted(path, "vocoder", dtype=dtype)
    header = read_header(path)
    cfg = VocoderConfig.from_config(header.config())  # refuses LTX-2.3 (BWE) before touching tensors
    keys = header.keys_with_prefix(PREFIX)
    if not keys:
        raise CheckpointError(f"{header.path}: no tensors under {PREFIX!r}; "
                              "is this an LTX-2 checkpoint with a vocoder?")
    weights = {k[len(PREFIX):]: v for k, v in load_tensors(header, keys, dtype).items()}
    model = Vocoder(cfg)
    load_strict(model, sanitize(weights), "vocoder")
    model.eval()
    return model
