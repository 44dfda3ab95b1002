"""The embeddings connector: a small 1-D transformer between the text features and the DiT.

LTX-2 has two (video and audio), same structure, own weights. LTX-2.3's connectors are deeper (8
blocks) and gate each attention head's output by ``2 * sigmoid(logits)`` (logits: a Linear of the
block's normed input, one per head). Before the blocks, the padded
positions are replaced by learnable registers: the valid tokens are moved to the front (order
kept) and the tail is filled with the register table tiled along the sequence, so the register
a slot gets depends on its absolute position. Afterwards every position is valid, so the blocks
attend without a mask and the connector's output mask is all ones.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ltx2.spec.errors import BadInputError

from ..weights.keymap import Rename

ROPE_THETA = 10_000.0  # the official connector never reads a theta from the config
EPS = 1e-6


class ConnectorConfigError(BadInputError):
    """The checkpoint config asks for a connector variant this port does not implement."""


# connector checkpoint names (below its prefix) -> EmbeddingsConnector names, in order (the text embeddings'
# key map applies them under each connector's prefix)
CONNECTOR_RENAMES = (
    Rename("^transformer_1d_blocks.", "^blocks."),
    Rename(".attn1.", ".attn."),
    Rename(".attn.to_out.0.", ".attn.to_out."),  # nn.Sequential(Linear, Identity) -> Linear
    Rename(".ff.net.0.proj.", ".ff.proj_in."),  # GELU(Linear) wrapper
    Rename(".ff.net.2.", ".ff.proj_out."),
)


@dataclass(frozen=True)
class ConnectorConfig:
    num_attention_heads: int = 30
    attention_head_dim: int = 128
    num_layers: int = 2
    num_learnable_registers: int = 128
    max_pos: tuple[int, ...] = (1,)
    rope_type: str = "interleaved"  # or "split"
    double_precision_rope: bool = False
    gated_attention: bool = False  # LTX-2.3: per-head output gates

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    @classmethod
    def from_config(cls, tcfg: dict, which: str, num_learnable_registers: int) -> "ConnectorConfig":
        """From the checkpoint's ``transformer`` config; ``which`` is "video" or "audio" (the audio one
        takes ``audio_connector_*`` sizes when present, else the video ones). The register count
        comes from the checkpoint tensor (the official configurator hard-codes 128)."""
        gated = tcfg.get("connector_apply_gated_attention", False)
        if not isinstance(gated, bool):
            raise ConnectorConfigError(f"connector_apply_gated_attention={gated!r}: expected true or false")
        rope_type = tcfg.get("rope_type", "interleaved")
        if rope_type not in ("interleaved", "split"):
            raise ConnectorConfigError(f"rope_type={rope_type!r} is not supported (expected 'interleaved' or 'split')")

        def pick(name: str, default):
            if which == "audio":
                return tcfg.get(f"audio_{name}", tcfg.get(name, default))
            return tcfg.get(name, default)

        return cls(num_attention_heads=int(pick("connector_num_attention_heads", 30)),
                   attention_head_dim=int(pick("connector_attention_head_dim", 128)),
                   num_layers=int(pick("connector_num_layers", 2)),
                   num_learnable_registers=int(num_learnable_registers),
                   max_pos=tuple(tcfg.get("connector_positional_embedding_max_pos", [1])),
                   rope_type=rope_type,
                   double_precision_rope=tcfg.get("frequencies_precision", False) == "float64",
                   gated_attention=gated)


def rms_norm(x: mx.array) -> mx.array:
    return mx.fast.rms_norm(x, None, EPS)


# ---------------------------------------------------------------------------------------------------------------------
# 1-D RoPE (the LTX variant: frequencies spread log-uniformly over [1, theta] * pi/2, positions as fractions of max_pos
# mapped to [-1, 1])
# ---------------------------------------------------------------------------------------------------------------------
def _linspace_f32(n: int) -> np.ndarray:
    """0..1 in n float32 steps, rounded as PyTorch's CPU linspace does (a float32 step; then
    ``step * i`` for the first half and ``1 - step * (n - 1 - i)`` for the second, each rounded once,
    as a fused multiply-add), so the float32 frequency grid matches it bit for bit."""
    if n == 1:
        return np.zeros(1, np.float32)
    step = np.float64(np.float32(1.0) / np.float32(n - 1))
    i = np.arange(n, dtype=np.float64)
    return np.where(i < n // 2, step * i, 1.0 - step * (n - 1 - i)).astype(np.float32)


@functools.lru_cache(maxsize=8)
def rope_tables(cfg: ConnectorConfig, seq_len: int) -> tuple[mx.array, mx.array]:
    """cos, sin for positions 0..seq_len-1: split -> [1, H, T, head_dim/2]; interleaved -> [1, T, inner_dim].

    One-off constant setup in numpy, reproducing the reference's float32 roundings (the frequency grid in
    float64 or float32 as configured, then float32 products) so large angles agree to the last bit."""
    dim = cfg.inner_dim
    n_freq = dim // (2 * len(cfg.max_pos))
    if cfg.double_precision_rope:
        grid = np.power(ROPE_THETA, np.linspace(0.0, 1.0, n_freq, dtype=np.float64))
        freq = (grid * math.pi / 2).astype(np.float32)
    else:
        exps = _linspace_f32(n_freq)
        freq = (np.power(np.float32(ROPE_THETA), exps).astype(np.float32) * np.float32(math.pi / 2)).astype(np.float32)
    if len(cfg.max_pos) != 1:
        raise ConnectorConfigError(f"connector_positional_embedding_max_pos={list(cfg.max_pos)!r}: the connector "
                                   "has 1-D positions, so exactly one max position is expected")
    pos = np.arange(seq_len, dtype=np.float32) / np.float32(cfg.max_pos[0])
    angles = (freq[None, :] * (pos[:, None] * np.float32(2) - np.float32(1))).astype(np.float32)  # [T, F]
    cos = np.cos(angles.astype(np.float64)).astype(np.float32)
    sin = np.sin(angles.astype(np.float64)).astype(np.float32)
    if cfg.rope_type == "split":
        pad = dim // 2 - n_freq
        if pad:  # leading un-rotated channels
            cos = np.concatenate([np.ones((seq_len, pad), np.float32), cos], axis=-1)
            sin = np.concatenate([np.zeros((seq_len, pad), np.float32), sin], axis=-1)
        h = cfg.num_attention_heads
        cos = cos.reshape(seq_len, h, -1).transpose(1, 0, 2)[None]
        sin = sin.reshape(seq_len, h, -1).transpose(1, 0, 2)[None]
    else:
        cos, sin = np.repeat(cos, 2, axis=-1), np.repeat(sin, 2, axis=-1)
        pad = dim % 2
        if pad:
            cos = np.concatenate([np.ones((seq_len, pad), np.float32), cos], axis=-1)
            sin = np.concatenate([np.zeros((seq_len, pad), np.float32), sin], axis=-1)
        cos, sin = cos[None], sin[None]
    return mx.array(cos), mx.array(sin)


def apply_rope(x: mx.array, cos: mx.array, sin: mx.array, rope_type: str, heads: int) -> mx.array:
    """x: [B, T, inner_dim] -> same shape, rotated."""
    if rope_type == "split":  # per head, first half rotates against second half
        B, T, D = x.shape
        xh = x.reshape(B, T, heads, D // heads).transpose(0, 2, 1, 3)
        half = xh.shape[-1] // 2
        x1, x2 = xh[..., :half], xh[..., half:]
        out = mx.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
        return out.transpose(0, 2, 1, 3).reshape(B, T, D)
    pairs = x.reshape(*x.shape[:-1], -1, 2)  # interleaved: (x0, x1) -> (-x1, x0)
    rotated = mx.stack([-pairs[..., 1], pairs[..., 0]], axis=-1).reshape(x.shape)
    return x * cos + rotated * sin


# ---------------------------------------------------------------------------------------------------------------------
# modules
# ---------------------------------------------------------------------------------------------------------------------
class ConnectorAttention(nn.Module):
    def __init__(self, cfg: ConnectorConfig):
        super().__init__()
        d = cfg.inner_dim
        self.heads = cfg.num_attention_heads
        self.rope_type = cfg.rope_type
        self.to_q = nn.Linear(d, d)
        self.to_k = nn.Linear(d, d)
        self.to_v = nn.Linear(d, d)
        self.q_norm = nn.RMSNorm(d, eps=EPS)  # over all heads together, learnable scale
        self.k_norm = nn.RMSNorm(d, eps=EPS)
        if cfg.gated_attention:
            self.to_gate_logits = nn.Linear(d, cfg.num_attention_heads)
        self.to_out = nn.Linear(d, d)

    def __call__(self, x: mx.array, cos: mx.array, sin: mx.array) -> mx.array:
        B, T, D = x.shape
        q = apply_rope(self.q_norm(self.to_q(x)), cos, sin, self.rope_type, self.heads)
        k = apply_rope(self.k_norm(self.to_k(x)), cos, sin, self.rope_type, self.heads)
        v = self.to_v(x)
        q, k, v = (t.reshape(B, T, self.heads, -1).transpose(0, 2, 1, 3) for t in (q, k, v))
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=1.0 / math.sqrt(D // self.heads))
        out = out.transpose(0, 2, 1, 3)  # [B, T, heads, head_dim]
        if "to_gate_logits" in self:  # 2 * sigmoid: a zero logit leaves the head as it is
            out = out * (2 * mx.sigmoid(self.to_gate_logits(x)))[..., None]
        return self.to_out(out.reshape(B, T, D))


class ConnectorFeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.proj_in = nn.Linear(dim, dim * mult)
        self.proj_out = nn.Linear(dim * mult, dim)

    def __call__(self, x: mx.array) -> mx.array:
        return self.proj_out(nn.gelu_approx(self.proj_in(x)))


class ConnectorBlock(nn.Module):
    """Pre-norm (weightless RMSNorm) self-attention and feed-forward, each with a residual."""

    def __init__(self, cfg: ConnectorConfig):
        super().__init__()
        self.attn = ConnectorAttention(cfg)
        self.ff = ConnectorFeedForward(cfg.inner_dim)

    def __call__(self, x: mx.array, cos: mx.array, sin: mx.array) -> mx.array:
        x = x + self.attn(rms_norm(x), cos, sin)
        return x + self.ff(rms_norm(x))


class EmbeddingsConnector(nn.Module):
    def __init__(self, cfg: ConnectorConfig):
        super().__init__()
        self.config = cfg
        self.learnable_registers = mx.zeros((cfg.num_learnable_registers, cfg.inner_dim))
        self.blocks = [ConnectorBlock(cfg) for _ in range(cfg.num_layers)]

    def replace_padding_with_registers(self, x: mx.array, mask: mx.array) -> mx.array:
        """Valid tokens moved to the front in order; slots left over take the tiled registers.

        As the reference, the slots that keep tokens are the mask read backwards (for left padding:
        the first n), and a slot whose gathered entry is past the n valid tokens holds zero there."""
        B, T, _ = x.shape
        R = self.config.num_learnable_registers
        if T % R:
            raise ValueError(f"text sequence length {T} must be a multiple of the connector's {R} learnable "
                             f"registers (the tokenizer pads every prompt to a fixed length such as 1024)")
        valid = mask.astype(mx.bool_)
        t = mx.arange(T)[None]
        order = mx.argsort(mx.where(valid, t, t + T), axis=-1)  # valid positions first, each group in order
        gathered = mx.take_along_axis(x, order[..., None], axis=1)
        n_valid = valid.astype(mx.int32).sum(axis=-1, keepdims=True)
        gathered = mx.where((t < n_valid)[..., None], gathered, mx.zeros_like(gathered))
        keep = valid[:, ::-1][..., None]
        registers = mx.tile(self.learnable_registers, (T // R, 1))[None].astype(x.dtype)
        return mx.where(keep, gathered, registers)

    def __call__(self, x: mx.array, mask: mx.array) -> tuple[mx.array, mx.array]:
        """x [B, T, D], binary mask [B, T] -> (encoded [B, T, D], binary mask [B, T], now all ones)."""
        x = self.replace_padding_with_registers(x, mask)
        cos, sin = rope_tables(self.config, x.shape[1])
        cos, sin = cos.astype(x.dtype), sin.astype(x.dtype)
        for block in self.blocks:
            x = block(x, cos, sin)
        return rms_norm(x), mx.ones(mask.shape, dtype=mask.dtype)
