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
import re
import time
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ..transformer.streaming import (StreamStats, converted_mode_check, finish_block, hold, hold_module, to_float32)
from ..weights import CheckpointError, load_strict, load_tensors, read_header
from ..weights.safetensors_file import require_complete
from ..weights.modes import RESIDENT_FLOAT32, WeightsMode
from ..weights.prefetch import Prefetcher, prefetch_enabled
from .gemma import SLIDING, GemmaConfig, GemmaEncoder, gemma3_text, initialize_rope, weight_plan

EMBED = "embed_tokens.weight"
_ROWS_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "U32": np.uint32}


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
    """The Gemma-3 language model's tensors, readable layer by layer under a ``WeightsMode``."""

    def __init__(self, path: str | Path, mode: WeightsMode = RESIDENT_FLOAT32):
        from ..weights.converted import is_converted, open_converted

        self.path = Path(path)
        self.mode = mode
        # a file written by `ltx2 convert` (text.safetensors): GemmaEncoder names, possibly quantised layers
        self.converted = open_converted(self.path) if is_converted(self.path) else None
        if self.converted is not None:
            info = self.converted.part("gemma")
            converted_mode_check(self.path, info.bits, info.group_size, mode)
            cfg = info.config
            self.prefix = info.prefix + "model."
            per_file = {str(self.path): self.converted.keys("gemma", "model.")}
        else:
            cfg, self.prefix, per_file = weight_plan(self.path)
        self.config = GemmaConfig.from_config(cfg)
        self.headers = {f: read_header(f) for f in per_file}
        self.file_of = {k: f for f, keys in per_file.items() for k in keys}
        layer_re = re.compile(re.escape(self.prefix) + r"layers\.(\d+)\.")
        self.layer_keys: dict[int, list[str]] = {}
        self.other_keys: list[str] = []
        self.embed_key = self.prefix + EMBED
        for k in self.file_of:
            m = layer_re.match(k)
            if m:
                self.layer_keys.setdefault(int(m.group(1)), []).append(k)
            elif k != self.embed_key:
                self.other_keys.append(k)
        n = self.config.num_hidden_layers
        if sorted(self.layer_keys) != list(range(n)):
            raise CheckpointError(f"{self.path}: the Gemma config says {n} layers but the weights hold layers "
                                  f"{sorted(self.layer_keys)[:8]}{' ...' if len(self.layer_keys) > 8 else ''}")
        if self.embed_key not in self.file_of:
            raise CheckpointError(f"{self.path}: no {self.embed_key}")

    def _read(self, keys: list[str], dtype) -> dict[str, mx.array]:
        by_file: dict[str, list[str]] = {}
        for k in keys:
            by_file.setdefault(self.file_of[k], []).append(k)
        out: dict[str, mx.array] = {}
        for f, ks in by_file.items():
            out.update(load_tensors(self.headers[f], ks, None))
        if dtype is not None:  # float32: cast one tensor at a time
            to_float32(out)
        return {k[len(self.prefix):]: v for k, v in out.items()}

    def nbytes_stored(self, keys: list[str]) -> int:
        return sum(self.headers[self.file_of[k]].tensors[k].nbytes for k in keys)

    def layer_ranges(self, i: int) -> list:
        """(file, begin, end) of layer ``i``'s tensors, for the prefetcher."""
        from ..weights.prefetch import tensor_ranges

        return [r for k in self.layer_keys[i] for r in tensor_ranges(self.file_of[k], self.headers[self.file_of[k]], [k])]

    def embed(self, input_ids: mx.array) -> mx.array:
        """The embedding rows of ``input_ids`` ([B, T] -> [B, T, hidden]), read from the file, float32."""
        header = self.headers[self.file_of[self.embed_key]]
        info = header.tensors[self.embed_key]
        if info.end > header.size:
            raise CheckpointError(f"{header.path}: tensor {self.embed_key!r} ends at byte {info.end} but the file "
                                  f"has {header.size} bytes: the file is truncated (re-download it)")
        ids = np.asarray(input_ids).astype(np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= info.shape[0]):
            raise ValueError(f"token id out of range for an embedding of {info.shape[0]} rows")
        hidden = self.config.hidden_size
        if info.dtype == "U32":  # a converted file with a quantised embedding: dequantise just these rows
            stem = self.embed_key[: -len(".weight")]
            part = self.converted.part("gemma")
            w, sc, bi = (_rows(header, k, ids) for k in (self.embed_key, stem + ".scales", stem + ".biases"))
            rows = mx.dequantize(w, sc, bi, group_size=part.group_size, bits=part.bits)
            return rows.astype(mx.float32).reshape(*ids.shape, hidden)
        if info.dtype not in _ROWS_DTYPES:  # an exotic dtype: read the whole table once (decoded as any tensor)
            table = load_tensors(header, [self.embed_key], mx.float32)[self.embed_key]
            return table[mx.array(ids)]
        return _rows(header, self.embed_key, ids).astype(mx.float32).reshape(*ids.shape, hidden)

    def resident_part(self) -> GemmaEncoder:
        """GemmaEncoder without layers and without the embedding table (the final norm, the masks)."""
        enc = GemmaEncoder(self.config)
        enc.model.layers = []
        enc.model.pop("embed_tokens")
        if self.converted is not None:
            from ..weights.converted import load_converted_submodule

            load_converted_submodule(self.converted, "gemma", "model.", enc.model, dtype=mx.float32,
                                     exclude=("model.layers.", "model.embed_tokens."))
        else:
            load_strict(enc.model, hold(self._read(self.other_keys, mx.float32), self.mode, in_block=False), "gemma")
        mx.eval(enc.model.parameters())
        return enc

    def layer(self, i: int) -> nn.Module:
        """Decoder layer ``i`` loaded and held under the mode (evaluated)."""
        layer = new_layer(self.config, i)
        if self.converted is not None:
            from ..weights.converted import load_converted_submodule

            load_converted_submodule(self.converted, "gemma", f"model.layers.{i}.", layer, dtype=mx.float32)
            hold_module(layer, self.mode, in_block=True)
        else:
            keys = self.layer_keys[i]
            floating = all(self.headers[self.file_of[k]].tensors[k].dtype in ("BF16", "F16", "F32") for k in keys)
            keep_stored = self.mode.precision == "bfloat16" and floating
            w = self._read(keys, None if keep_stored else mx.float32)
            prefix = f"layers.{i}."
            load_strict(layer, hold({k[len(prefix):]: v for k, v in w.items()}, self.mode, in_block=True),
                        f"gemma layer {i}")
        return finish_block(layer, self.mode)


def _rows(header, key: str, ids: np.ndarray) -> mx.array:
    """Rows ``ids`` of a 2-D tensor, read through a memory map (only those rows are copied out)."""
    info = header.tensors[key]
    require_complete(header, key, info)
    mm = np.memmap(header.path, dtype=np.uint8, mode="r")
    table = mm[info.begin:info.end].view(_ROWS_DTYPES[info.dtype]).reshape(info.shape)
    rows = np.array(table[ids.reshape(-1)])
    del table, mm
    arr = mx.array(rows)
    return arr.view(mx.bfloat16) if info.dtype == "BF16" else arr


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


def load_gemma_mode(path: str | Path, mode: WeightsMode = RESIDENT_FLOAT32) -> LayeredGemma:
    return LayeredGemma(GemmaWeights(path, mode))
