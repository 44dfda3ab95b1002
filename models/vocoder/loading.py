"""Loading the vocoder from a weight source (``vocoder.*`` keys only), strictly: one generator (LTX-2.0), or
LTX-2.3's low-rate generator + bandwidth extension (``vocoder.vocoder.*``, ``vocoder.bwe_generator.*``,
``vocoder.mel_stft.*``: the same key map, the module names mirror the file's)."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from ltx2.spec.layout import VOCODER

from ..weights.keymap import CONV, CONV_TRANSPOSE, FLAT_FILTER, KeyMap, LayoutRule, Root
from ..weights.source import WeightSource, open_source
from .bwe import VocoderWithBWE
from .config import BweConfig, VocoderConfig, vocoder_config
from .generator import Vocoder

PREFIX = VOCODER

# checkpoint key -> Vocoder name: names are kept (``vocoder.`` removed), layouts change
VOCODER_KEYMAP = KeyMap(
    network="vocoder",
    roots=(Root(PREFIX, ""),),
    layouts=(
        LayoutRule(FLAT_FILTER, r"\.filter$"),  # AMP anti-aliasing FIR, stored (1, 1, taps) -> (taps,)
        LayoutRule(CONV_TRANSPOSE, r"(^|\.)ups\.\d+\.weight$"),  # ConvTranspose1d (in, out, k) -> (out, k, in)
        LayoutRule(CONV, r"\.weight$", ndims=(3,)),  # Conv1d (out, in, k) -> (out, k, in)
        LayoutRule(CONV, r"_basis$", ndims=(3,)),  # the BWE's STFT bases, conv kernels (rows, 1, n_fft)
    ),
    parts=("vocoder",),
    describe="an LTX-2 checkpoint with a vocoder",
)


def build_vocoder(cfg: VocoderConfig | BweConfig) -> Vocoder | VocoderWithBWE:
    """The (unloaded) vocoder a config describes."""
    return VocoderWithBWE(cfg) if isinstance(cfg, BweConfig) else Vocoder(cfg)


def to_checkpoint(model: nn.Module) -> dict[str, mx.array]:
    """The vocoder's parameters under their official single-file checkpoint keys (``vocoder.*``)."""
    return VOCODER_KEYMAP.to_checkpoint(dict(tree_flatten(model.parameters())))


def load_vocoder(path: WeightSource | str | Path, dtype: mx.Dtype | None = mx.float32) -> Vocoder | VocoderWithBWE:
    source = open_source(path, VOCODER_KEYMAP)
    cfg = vocoder_config(source.config())  # refuses what is not built before touching tensors
    source.require_tensors()
    if isinstance(cfg, BweConfig):  # a float32 island: v1.2.0 runs VocoderWithBWE in float32 whatever its dtype
        dtype = mx.float32
    model = source.load_into(build_vocoder(cfg), "vocoder", dtype)
    model.eval()
    return model
