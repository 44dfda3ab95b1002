"""Gemma-3 layer by layer: resident at a chosen precision, or streamed from its shards, embedding read by rows.

``GemmaWeights`` reads the language model's tensors from the Gemma folder (or single file) one
decoder layer at a time (only that layer's keys, from whichever shard holds them; the index says
which), and holds them as the ``WeightsMode`` says (see ``models/weights/modes.py``).

The token embedding (262k x 3840: 2 GB in bf16, 4 GB in float32) is never held: LTX-2 needs Gemma's
hidden states, not its logits, so the table is only ever looked up, and ``GemmaWeights.embed`` reads
exactly the rows of the prompt's tokens from the file (a memory map), cast to float32. The values
are the table's own, so the result equals a resident lookup bit for bit.

``LayeredGemma`` computes what ``GemmaEncoder`` computes (every hidden state, the same masks and
the same per-layer sequence) with its layers either all resident or, when streaming, read right
before each runs and dropped after it (the hidden state evaluated in between), so the peak holds one
layer. It replaces ``GemmaEncoder`` in ``TextEncoder``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ..precision import cast_floating
from ..transformer.streaming import StreamStats, converted_mode_check, finish_block, read_held
from ..weights import CheckpointError
from ..weights.modes import RESIDENT_FLOAT32, WeightsMode
from ..weights.prefetch import Prefetcher, Range, prefetch_enabled
from ..weights.source import WeightSource, open_source
from .gemma import GEMMA_KEYMAP, SLIDING, GemmaConfig, GemmaEncoder, gemma3_text, initialize_rope

EMBED = "embed_tokens.weight"
MODEL = "model."  # GemmaEncoder's name for mlx-lm's Gemma3Model
LAYERS = MODEL + "layers."


def new_layer(config: GemmaConfig, index: int) -> nn.Module:
    """An (unloaded) mlx-lm Gemma-3 decoder layer with the RoPE its ``layer_types`` entry names."""
    layer = gemma3_text.TransformerBlock(config.mlx_lm_args(), index)
    attn, sliding = layer.self_attn, config.layer_types[index] == SLIDING
    if attn.is_sliding != sliding:  # as GemmaEncoder: layer_types need not be a plain pattern
        attn.is_sliding = sliding
        attn.rope = (initialize_rope(config.head_dim, config.rope_local_base_freq, traditional=False) if sliding
                     else initialize_rope(config.head_dim, config.rope_theta, traditional=False,
                                          scaling_config=config.rope_scaling,
                                          max_position_embeddings=config.max_position_embeddings))
    return layer


class GemmaWeights:
    """The Gemma-3 language model's tensors in a weight source, readable layer by layer under a ``WeightsMode``."""

    def __init__(self, path: str | Path | WeightSource, mode: WeightsMode = RESIDENT_FLOAT32,
                 dtype: mx.Dtype = mx.float32):
        self.source = open_source(path, GEMMA_KEYMAP)
        self.path = self.source.path
        self.mode = mode
        self.dtype = dtype  # the compute dtype (models/precision.py): float weights end up in it
        q = self.source.quantization()
        if q is not None:
            converted_mode_check(self.path, *q, mode)
        self.config = GemmaConfig.from_config(self.source.config())
        self.layer_keys, others = self.source.blocks(LAYERS)
        self.embed_key = MODEL + EMBED
        self.other_keys = [k for k in others if k != self.embed_key]
        n = self.config.num_hidden_layers
        if sorted(self.layer_keys) != list(range(n)):
            raise CheckpointError(f"{self.path}: the Gemma config says {n} layers but the weights hold layers "
                                  f"{sorted(self.layer_keys)[:8]}{' ...' if len(self.layer_keys) > 8 else ''}")
        if self.embed_key not in others:
            raise CheckpointError(f"{self.path}: no {self.source.file_key(self.embed_key)}")

    def nbytes_stored(self, names: list[str]) -> int:
        return self.source.stored_nbytes(names)

    def layer_ranges(self, i: int) -> list[Range]:
        """(file, begin, end) of layer ``i``'s tensors, for the prefetcher."""
        return self.source.ranges(self.layer_keys[i])

    def embed(self, input_ids: mx.array) -> mx.array:
        """The embedding rows of ``input_ids`` ([B, T] -> [B, T, hidden]), read from the file, in the compute dtype
        (float32 unless narrower)."""
        return self.source.rows(self.embed_key, np.asarray(input_ids).astype(np.int64)).astype(self.dtype)

    def resident_part(self) -> GemmaEncoder:
        """GemmaEncoder without layers and without the embedding table (the final norm, the masks)."""
        enc = GemmaEncoder(self.config)
        enc.model.layers = []
        enc.model.pop("embed_tokens")
        self.source.load_into(enc.model, "gemma",
                              weights=read_held(self.source, self.other_keys, self.mode, MODEL, in_block=False))
        if self.dtype != mx.float32:
            cast_floating(enc.model, self.dtype)
        mx.eval(enc.model.parameters())
        return enc

    def layer(self, i: int) -> nn.Module:
        """Decoder layer ``i`` loaded and held under the mode (evaluated)."""
        layer = new_layer(self.config, i)
        self.source.load_into(layer, f"gemma layer {i}", weights=read_held(
            self.source, self.layer_keys[i], self.mode, f"{LAYERS}{i}.", in_block=True))
        return finish_block(layer, self.mode, self.dtype)


class LayeredGemma:
    """``GemmaEncoder``'s hidden states with the embedding read by rows and the layers resident or streamed."""

    def __init__(self, weights: GemmaWeights):
        self.weights = weights
        self.config = weights.config
        self.streaming = weights.mode.streaming
        self.encoder = weights.resident_part()
        self.layers = None if self.streaming else [weights.layer(i) for i in range(self.config.num_hidden_layers)]
        self.stats = StreamStats()
        self.prefetch = Prefetcher() if self.streaming and prefetch_enabled() else None

    def _layer(self, i: int) -> nn.Module:
        if not self.streaming:
            return self.layers[i]
        t0 = time.perf_counter()
        layer = self.weights.layer(i)
        self.stats.load_s += time.perf_counter() - t0
        self.stats.blocks += 1
        self.stats.bytes_read += self.weights.nbytes_stored(self.weights.layer_keys[i])
        if self.prefetch is not None:  # the next layer's bytes come in while this one computes
            self.prefetch.ahead(self.weights.layer_ranges((i + 1) % self.config.num_hidden_layers))
        return layer

    def __call__(self, input_ids: mx.array, attention_mask: mx.array | None = None) -> list[mx.array]:
        """``num_hidden_layers + 1`` hidden states, each [B, T, hidden] (as ``GemmaEncoder.__call__``)."""
        if attention_mask is None:
            attention_mask = mx.ones(input_ids.shape, dtype=mx.int32)
        t_load = self.stats.load_s
        h = self.weights.embed(input_ids)
        h = h * mx.array(math.sqrt(self.config.hidden_size), dtype=mx.float32).astype(h.dtype)
        masks = self.encoder._masks(attention_mask, h.dtype)
        states = [h]
        # the same per-layer sequence as GemmaEncoder.__call__ (kept in step with it by tests/test_streaming.py)
        for i, kind in enumerate(self.config.layer_types):
            layer = self._layer(i)
            mask, keep = masks[kind]
            r = layer.self_attn(layer.input_layernorm(h), mask) * keep
            h = h + layer.post_attention_layernorm(r)
            r = layer.mlp(layer.pre_feedforward_layernorm(h))
            h = h + layer.post_feedforward_layernorm(r)
            if self.streaming:
                mx.eval(h)  # before the next layer comes in, so this one can go
                del layer
            states.append(h)
        states[-1] = self.encoder.model.norm(h)
        if self.streaming:
            self.stats.passes += 1
            self.stats.per_pass_s.append(self.stats.load_s - t_load)
        return states


def load_gemma_mode(path: str | Path, mode: WeightsMode = RESIDENT_FLOAT32,
                    dtype: mx.Dtype = mx.float32) -> LayeredGemma:
    """Gemma-3 as ``mode`` says, computing in ``dtype`` (models/precision.py)."""
    return LayeredGemma(GemmaWeights(path, mode, dtype))
