"""Gemma-3 text backbone (mlx-lm's ``gemma3_text``) returning every hidden state, as LTX-2 consumes it.

LTX-2 runs the Hugging Face call ``model.model(input_ids, attention_mask, output_hidden_states=True)``
on a left-padded prompt and keeps all ``num_hidden_layers + 1`` hidden states. mlx-lm's
``Gemma3Model.__call__`` returns only the final state and has no padding mask, so we drive its
layers ourselves:

- hidden state 0 is the scaled token embedding; hidden state ``i`` is the output of layer ``i - 1``;
  the LAST one is the final RMSNorm of the last layer's output (HF replaces the un-normed state with
  ``last_hidden_state``).
- positions are ``0 .. T-1`` for every row, padding included (HF's ``cache_position`` when no
  ``position_ids`` are given), so left padding shifts the text's positions; we do the same.
- each query sees keys ``k <= q`` that are not padding, and on sliding layers also ``q - k < window``.
  A query with no visible key at all (a left-pad position) gets a zero attention output, which is
  what PyTorch's SDPA returns for a fully masked row.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from ltx2.spec.errors import BadInputError
from ltx2.spec.layout import GEMMA_LM_PREFIXES

from ..weights.keymap import KeyMap, Root
from ..weights.source import OfficialSource, WeightSource, open_source


def _import_mlx_lm_gemma3():
    """mlx-lm's Gemma-3 model and RoPE modules, without running ``mlx_lm/__init__.py``.

    That ``__init__`` imports transformers (about 1 s), which nothing here uses, and the text-encode
    stage process would pay it on every start. The model modules import only from
    ``mlx_lm.models``, so a placeholder parent package is enough while they load. The placeholder and
    the modules loaded under it are then dropped from ``sys.modules`` (this module keeps its own
    references), so a later ``import mlx_lm`` loads the real package, whole, as usual.
    """
    if "mlx_lm" in sys.modules:
        return importlib.import_module("mlx_lm.models.gemma3_text"), importlib.import_module("mlx_lm.models.rope_utils")
    spec = importlib.util.find_spec("mlx_lm")
    stub = types.ModuleType("mlx_lm")
    stub.__path__ = list(spec.submodule_search_locations)
    stub.__spec__ = spec
    sys.modules["mlx_lm"] = stub
    try:
        return importlib.import_module("mlx_lm.models.gemma3_text"), importlib.import_module("mlx_lm.models.rope_utils")
    finally:
        for name in [n for n in sys.modules if n == "mlx_lm" or n.startswith("mlx_lm.")]:
            del sys.modules[name]


gemma3_text, _rope_utils = _import_mlx_lm_gemma3()
initialize_rope = _rope_utils.initialize_rope

SLIDING = "sliding_attention"
FULL = "full_attention"


class GemmaConfigError(BadInputError):
    """The Gemma config asks for something this port does not implement."""


@dataclass(frozen=True)
class GemmaConfig:
    """The text part of a Gemma-3 config; defaults are Hugging Face ``Gemma3TextConfig``'s, so a
    config.json that leaves a field out means what it means to transformers."""

    vocab_size: int = 262_208
    hidden_size: int = 2304
    intermediate_size: int = 9216
    num_hidden_layers: int = 26
    num_attention_heads: int = 8
    num_key_value_heads: int = 4
    head_dim: int = 256
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    rope_local_base_freq: float = 10_000.0
    rope_scaling: dict | None = None
    query_pre_attn_scalar: float = 256
    sliding_window: int = 4096
    max_position_embeddings: int = 131_072
    layer_types: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def from_config(cls, cfg: dict) -> "GemmaConfig":
        """From a Gemma3ForConditionalGeneration config (``text_config`` inside) or a text-only one."""
        if cfg.get("model_type") == "gemma3" or "text_config" in cfg:
            tc = cfg.get("text_config") or {}  # absent: transformers' default text config
        else:
            tc = cfg  # a text-only (gemma3_text) config
        mt = tc.get("model_type", "gemma3_text")
        if mt != "gemma3_text":
            raise GemmaConfigError(f"Gemma config: model_type={mt!r} is not supported (expected 'gemma3_text' "
                                   "inside a 'gemma3' config): LTX-2 uses Gemma-3")
        refuse = {
            "hidden_activation": ("gelu_pytorch_tanh", tc.get("hidden_activation", tc.get("hidden_act", "gelu_pytorch_tanh"))),
            "attn_logit_softcapping": (None, tc.get("attn_logit_softcapping")),
            "attention_bias": (False, tc.get("attention_bias", False)),
            "use_bidirectional_attention": (False, tc.get("use_bidirectional_attention", False)),
        }
        for name, (want, got) in refuse.items():
            if got != want:
                raise GemmaConfigError(f"Gemma config: {name}={got!r} is not supported (only {want!r}, as in Gemma-3)")
        scaling = tc.get("rope_scaling")
        if scaling is not None:
            kind = scaling.get("rope_type", scaling.get("type", "default"))
            if kind not in ("default", "linear"):
                raise GemmaConfigError(f"Gemma config: rope_scaling type {kind!r} is not supported "
                                       "(Gemma-3 uses 'linear' on its global layers)")
            scaling = None if kind == "default" else {"rope_type": "linear", "factor": float(scaling["factor"])}
        kw = {f: tc[f] for f in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                 "num_attention_heads", "num_key_value_heads", "head_dim", "rms_norm_eps",
                                 "rope_theta", "rope_local_base_freq", "query_pre_attn_scalar", "sliding_window",
                                 "max_position_embeddings") if tc.get(f) is not None}
        n = int(kw.get("num_hidden_layers", cls.num_hidden_layers))
        types = tc.get("layer_types")
        if types is None:  # the older form: every `pattern`-th layer is global
            pattern = int(tc.get("sliding_window_pattern", 6))
            types = [SLIDING if (i + 1) % pattern else FULL for i in range(n)]
        types = tuple(types)
        if len(types) != n or any(t not in (SLIDING, FULL) for t in types):
            raise GemmaConfigError(f"Gemma config: layer_types={list(types)!r} must list {n} entries, each "
                                   f"{SLIDING!r} or {FULL!r}")
        return cls(**kw, rope_scaling=scaling, layer_types=types)

    def mlx_lm_args(self) -> gemma3_text.ModelArgs:
        # mlx-lm only knows a fixed pattern; we set each layer's rope from layer_types afterwards
        fulls = [i for i, t in enumerate(self.layer_types) if t == FULL]
        pattern = fulls[0] + 1 if fulls else self.num_hidden_layers + 1
        return gemma3_text.ModelArgs(
            model_type="gemma3_text", hidden_size=self.hidden_size, num_hidden_layers=self.num_hidden_layers,
            intermediate_size=self.intermediate_size, num_attention_heads=self.num_attention_heads,
            head_dim=self.head_dim, rms_norm_eps=self.rms_norm_eps, vocab_size=self.vocab_size,
            num_key_value_heads=self.num_key_value_heads, rope_theta=self.rope_theta,
            rope_local_base_freq=self.rope_local_base_freq, query_pre_attn_scalar=self.query_pre_attn_scalar,
            sliding_window=self.sliding_window, sliding_window_pattern=pattern,
            max_position_embeddings=self.max_position_embeddings, rope_scaling=self.rope_scaling)

    @property
    def num_hidden_states(self) -> int:
        return self.num_hidden_layers + 1


class GemmaEncoder(nn.Module):
    """mlx-lm's Gemma3Model plus the per-layer masks and hidden-state collection LTX-2 needs."""

    def __init__(self, config: GemmaConfig):
        super().__init__()
        self.config = config
        self.model = gemma3_text.Gemma3Model(config.mlx_lm_args())
        for layer, kind in zip(self.model.layers, config.layer_types):
            attn = layer.self_attn
            if attn.is_sliding != (kind == SLIDING):  # layer_types not a plain pattern: set the rope it names
                attn.is_sliding = kind == SLIDING
                attn.rope = (initialize_rope(config.head_dim, config.rope_local_base_freq, traditional=False)
                             if attn.is_sliding else
                             initialize_rope(config.head_dim, config.rope_theta, traditional=False,
                                             scaling_config=config.rope_scaling,
                                             max_position_embeddings=config.max_position_embeddings))

    def _masks(self, attention_mask: mx.array, dtype: mx.Dtype) -> dict[str, tuple[mx.array, mx.array]]:
        """Per layer type: (additive mask [B,1,T,T], keep [B,T,1] = 1 where the query sees any key)."""
        T = attention_mask.shape[1]
        q = mx.arange(T)[:, None]
        k = mx.arange(T)[None, :]
        valid = attention_mask.astype(mx.bool_)[:, None, :]  # [B,1,T] over keys
        full = (k <= q)[None] & valid
        out = {}
        for kind, allowed in ((FULL, full), (SLIDING, full & ((q - k) < self.config.sliding_window)[None])):
            # a finite "minus infinity": a fully masked row then stays finite and is zeroed by `keep`
            neg = mx.array(mx.finfo(dtype).min / 2, dtype=dtype)
            additive = mx.where(allowed, mx.array(0, dtype=dtype), neg)[:, None]
            keep = mx.any(allowed, axis=-1, keepdims=True).astype(dtype)
            out[kind] = (additive, keep)
        return out

    def __call__(self, input_ids: mx.array, attention_mask: mx.array | None = None) -> list[mx.array]:
        """``num_hidden_layers + 1`` hidden states, each [B, T, hidden]."""
        if attention_mask is None:
            attention_mask = mx.ones(input_ids.shape, dtype=mx.int32)
        m = self.model
        h = m.embed_tokens(input_ids)
        # HF scales by sqrt(hidden) in the weights' dtype (mlx-lm rounds through bf16 instead)
        h = h * mx.array(math.sqrt(self.config.hidden_size), dtype=mx.float32).astype(h.dtype)
        masks = self._masks(attention_mask, h.dtype)
        states = [h]
        for layer, kind in zip(m.layers, self.config.layer_types):
            mask, keep = masks[kind]
            # TransformerBlock's own sequence, with the fully-masked-query rows zeroed (o_proj has no bias,
            # so zeroing its output equals zeroing the attention probabilities)
            r = layer.self_attn(layer.input_layernorm(h), mask) * keep
            h = h + layer.post_attention_layernorm(r)
            r = layer.mlp(layer.pre_feedforward_layernorm(h))
            h = h + layer.post_feedforward_layernorm(r)
            states.append(h)
        states[-1] = m.norm(h)
        return states


# ---------------------------------------------------------------------------------------------------------------------
# weights
# ---------------------------------------------------------------------------------------------------------------------
# Where the language model lives in the known Gemma-3 exports, most specific first (spec.layout)
LM_PREFIXES = GEMMA_LM_PREFIXES
# with the bare "model." prefix a file could still hold other towers; never read those
_OTHER_TOWERS = ("model.vision_tower.", "model.multi_modal_projector.", "model.language_model.")

# checkpoint key -> GemmaEncoder parameter name: the language-model prefix becomes GemmaEncoder's "model."
# (mlx-lm's Gemma3Model); the layer names below it are the same in HF and mlx-lm
GEMMA_KEYMAP = KeyMap(
    network="Gemma-3 language model",
    roots=tuple(Root(p, "model.", exclude=_OTHER_TOWERS if p == "model." else ()) for p in LM_PREFIXES),
    pick_root="embed_tokens.weight",
    parts=("gemma",),
    describe="a Gemma-3 model",
    config_keys=("gemma_config", "config"),
)


def gemma_keymap(prefix: str = LM_PREFIXES[0]) -> KeyMap:
    """The Gemma key map for a file that holds the language model under ``prefix``."""
    return GEMMA_KEYMAP.bind([prefix + GEMMA_KEYMAP.pick_root])


def to_checkpoint(model: GemmaEncoder, prefix: str = LM_PREFIXES[0]) -> dict[str, mx.array]:
    """The language model's parameters under their checkpoint keys (default: the original google/gemma-3
    layout)."""
    return gemma_keymap(prefix).to_checkpoint(dict(tree_flatten(model.parameters())))


def weight_plan(path: Path) -> tuple[dict, str, dict[str, list[str]]]:
    """(config dict, LM prefix, {safetensors file: LM keys to read from it}) for a folder or a file, from
    headers only (a converted text file reads as one in the original layout)."""
    source = OfficialSource(Path(path), GEMMA_KEYMAP)
    return source.config(), source.keymap.main_prefix, source.plan()


def load_gemma(path: WeightSource | str | Path, dtype: mx.Dtype = mx.float32) -> GemmaEncoder:
    """Gemma-3 language model from a weight source: a HF folder (config.json + shards), one safetensors file
    whose metadata holds ``gemma_config``, or a converted text file. Only language-model tensors are read;
    loading is strict."""
    source = open_source(path, GEMMA_KEYMAP)
    model = GemmaEncoder(GemmaConfig.from_config(source.config()))
    source.load_into(model.model, "gemma", dtype, prefix="model.")
    return model
