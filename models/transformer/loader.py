"""Loading the transformer from a weight source: the official checkpoint (or a tiny one in its layout), or a
converted file; and its key map."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten

from ltx2.spec.layout import TRANSFORMER, nested_prefixes

from ..weights.keymap import KeyMap, Rename, Root
from ..weights.source import WeightSource, open_source
from .config import TransformerConfig
from .model import LTX2Transformer

PREFIX = TRANSFORMER
# The text embeddings connectors sit under the transformer's prefix in the checkpoint but belong
# to the text-encoding stage; this loader never reads them.
FOREIGN_PREFIXES = nested_prefixes((PREFIX,))

# checkpoint key -> LTX2Transformer parameter name (layouts are the same on both sides: Linear weights only)
TRANSFORMER_KEYMAP = KeyMap(
    network="transformer",
    roots=(Root(PREFIX, "", exclude=FOREIGN_PREFIXES),),
    renames=(
        Rename(".to_out.0.", ".to_out."),  # nn.Sequential(Linear, Identity) -> Linear
        Rename("ff.net.0.proj.", "ff.proj_in."),  # ff / audio_ff: GELU(Linear) wrapper
        Rename("ff.net.2.", "ff.proj_out."),
        Rename(".emb.timestep_embedder.", ".timestep_embedder."),  # AdaLN's embedding wrapper
    ),
    parts=("transformer",),
    lora_root=PREFIX,
)


def to_checkpoint(model: LTX2Transformer) -> dict[str, mx.array]:
    """The model's parameters under their official single-file checkpoint keys."""
    return TRANSFORMER_KEYMAP.to_checkpoint(dict(tree_flatten(model.parameters())))


def build_transformer(source: WeightSource) -> LTX2Transformer:
    """The (unloaded) transformer the source's config describes."""
    return LTX2Transformer(TransformerConfig.from_config(source.config()))


def load_transformer(source: WeightSource | str | Path, dtype: mx.Dtype | None = mx.float32,
                     loras: list[tuple[str | Path, float]] = ()) -> LTX2Transformer:
    """Build the transformer from the source's config and load its weights strictly.

    Reads only ``model.diffusion_model.*`` minus the embeddings connectors. ``loras``: (file, strength)
    pairs fused into the weights on load (W += strength * B @ A), in order (a path is opened with them).
    """
    source = open_source(source, TRANSFORMER_KEYMAP, loras)
    model = build_transformer(source)
    source.require_tensors()
    source.load_into(model, "transformer", dtype)
    mx.eval(model.parameters())
    return model
