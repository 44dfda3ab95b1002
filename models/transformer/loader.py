"""Loading the transformer from the official single-file checkpoint (or a tiny one in its layout)."""

from __future__ import annotations

import re
from pathlib import Path

import mlx.core as mx

from ..weights import CheckpointError, load_strict, load_tensors, read_header
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


def load_transformer(path: str | Path, dtype: mx.Dtype | None = mx.float32) -> LTX2Transformer:
    """Build the transformer from the checkpoint's config metadata and load its weights strictly.

    Reads only ``model.diffusion_model.*`` minus the embeddings connectors.
    """
    header = read_header(path)
    config = TransformerConfig.from_config(header.config())
    keys = transformer_keys(header)
    if not keys:
        raise CheckpointError(f"{header.path}: no tensors under {PREFIX!r}; is this an LTX-2 checkpoint?")
    raw = load_tensors(header, keys, dtype)
    weights = sanitize({k[len(PREFIX):]: v for k, v in raw.items()})
    model = LTX2Transformer(config)
    load_strict(model, weights, "transformer")
    mx.eval(model.parameters())
    return model
