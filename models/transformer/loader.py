"""Loading the transformer from the official single-file checkpoint (or a tiny one in its layout)."""

from __future__ import annotations

import re
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten

from ..weights import CheckpointError, load_strict, load_tensors, read_header
from ..weights.converted import is_converted, load_converted
from ..weights.lora import fuse_lora
from .config import TransformerConfig
from .model import LTX2Transformer

PREFIX = "model.diffusion_model."
# The text embeddings connectors sit under the transformer's prefix in the checkpoint but belong
# to the text-encoding stage; this loader never reads them.
FOREIGN_PREFIXES = (PREFIX + "video_embeddings_connector.", PREFIX + "audio_embeddings_connector.")

# checkpoint key (prefix stripped) -> module parameter name; everything else maps to itself
_RENAMES = (
    (re.compile(r"\.to_out\.0\."), ".to_out."),  # nn.Sequential(Linear, Identity) -> Linear
    (re.compile(r"ff\.net\.0\.proj\."), "ff.proj_in."),  # ff / audio_ff: GELU(Linear) wrapper
    (re.compile(r"ff\.net\.2\."), "ff.proj_out."),
    (re.compile(r"\.emb\.timestep_embedder\."), ".timestep_embedder."),  # AdaLN's embedding wrapper
)


def transformer_keys(header) -> list[str]:
    """The checkpoint tensors that belong to the transformer."""
    return [k for k in header.tensors if k.startswith(PREFIX) and not k.startswith(FOREIGN_PREFIXES)]


def sanitize(weights: dict[str, mx.array]) -> dict[str, mx.array]:
    """Checkpoint names (``model.diffusion_model.`` stripped) -> ``LTX2Transformer`` parameter names."""
    out = {}
    for k, v in weights.items():
        for pat, rep in _RENAMES:
            k = pat.sub(rep, k)
        out[k] = v
    return out


# module parameter name -> checkpoint key (prefix stripped): the inverse of _RENAMES, rule for rule
_INVERSE_RENAMES = (
    (re.compile(r"\.to_out\."), ".to_out.0."),
    (re.compile(r"ff\.proj_in\."), "ff.net.0.proj."),
    (re.compile(r"ff\.proj_out\."), "ff.net.2."),
    (re.compile(r"\.timestep_embedder\."), ".emb.timestep_embedder."),
)


def unsanitize(weights: dict[str, mx.array]) -> dict[str, mx.array]:
    """``LTX2Transformer`` parameter names -> checkpoint names (without ``model.diffusion_model.``).

    The inverse of :func:`sanitize`; layouts are the same on both sides (Linear weights only)."""
    out = {}
    for k, v in weights.items():
        for pat, rep in _INVERSE_RENAMES:
            k = pat.sub(rep, k)
        out[k] = v
    return out


def to_checkpoint(model: LTX2Transformer) -> dict[str, mx.array]:
    """The model's parameters under their official single-file checkpoint keys."""
    return {PREFIX + k: v for k, v in unsanitize(dict(tree_flatten(model.parameters()))).items()}


def load_transformer(path: str | Path, dtype: mx.Dtype | None = mx.float32,
                     loras: list[tuple[str | Path, float]] = ()) -> LTX2Transformer:
    """Build the transformer from the checkpoint's config metadata and load its weights strictly.

    Reads only ``model.diffusion_model.*`` minus the embeddings connectors. ``loras``: (file,
    strength) pairs fused into the weights on load (W += strength * B @ A), in order.
    A file written by ``ltx2 convert`` is loaded as converted (quantised or not).
    """
    if is_converted(path):
        return load_converted(path, "transformer", dtype=dtype, loras=loras)
    header = read_header(path)
    config = TransformerConfig.from_config(header.config())
    keys = transformer_keys(header)
    if not keys:
        raise CheckpointError(f"{header.path}: no tensors under {PREFIX!r}; is this an LTX-2 checkpoint?")
    raw = load_tensors(header, keys, dtype)
    weights = {k[len(PREFIX):]: v for k, v in raw.items()}
    for lora_path, strength in loras:
        weights = fuse_lora(weights, lora_path, strength,
                            ignore_prefixes=tuple(p[len(PREFIX):] for p in FOREIGN_PREFIXES))
    weights = sanitize(weights)
    model = LTX2Transformer(config)
    load_strict(model, weights, "transformer")
    mx.eval(model.parameters())
    return model
