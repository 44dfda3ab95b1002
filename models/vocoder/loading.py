"""Loading the vocoder from a weight source (``vocoder.*`` keys only), strictly."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten

from ltx2.spec.layout import VOCODER

from ..weights.keymap import CONV, CONV_TRANSPOSE, FLAT_FILTER, KeyMap, LayoutRule, Root
from ..weights.source import WeightSource, open_source
from .config import VocoderConfig
from .generator import Vocoder

PREFIX = VOCODER

# checkpoint key -> Vocoder name: names are kept (``vocoder.`` removed), layouts change
VOCODER_KEYMAP = KeyMap(
    network="vocoder",
    roots=(Root(PREFIX, ""),),
    layouts=(
        LayoutRule(FLAT_FILTER, r"\.filter$"),  # AMP anti-aliasing FIR, stored (1, 1, taps) -> (taps,)
        LayoutRule(CONV_TRANSPOSE, r"^ups\..*\.weight$"),  # ConvTranspose1d (in, out, k) -> (out, k, in)
        LayoutRule(CONV, r"\.weight$", ndims=(3,)),  # Conv1d (out, in, k) -> (out, k, in)
    ),
    parts=("vocoder",),
    describe="an LTX-2 checkpoint with a vocoder",
)


def to_checkpoint(model: Vocoder) -> dict[str, mx.array]:
    """The vocoder's parameters under their official single-file checkpoint keys (``vocoder.*``)."""
    return VOCODER_KEYMAP.to_checkpoint(dict(tree_flatten(model.parameters())))


def load_vocoder(path: WeightSource | str | Path, dtype: mx.Dtype | None = mx.float32) -> Vocoder:
    source = open_source(path, VOCODER_KEYMAP)
    cfg = VocoderConfig.from_config(source.config())  # refuses LTX-2.3 (BWE) before touching tensors
    source.require_tensors()
    model = source.load_into(Vocoder(cfg), "vocoder", dtype)
    model.eval()
    return model
