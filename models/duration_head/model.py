"""LTX-2.5's duration head: a clip length, in seconds, predicted from the text connectors' outputs.

Each given stream (video and/or audio connector tokens) is projected to the pooler width and tagged with a learned
per-modality vector; the tokens of both are concatenated, ``num_queries`` learned queries attend to them (standard
multi-head attention with one packed q/k/v projection, as torch's ``nn.MultiheadAttention`` stores it, no mask: the
connector has already filled padded positions with its registers), the pooled queries are flattened and a two-layer
MLP (tanh-GELU between) gives a log-duration, returned exponentiated.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn

from ltx2.models.cpu_math import gelu_tanh
from ltx2.models.transformer.attention import attend


@dataclass(frozen=True)
class DurationHeadConfig:
    video_dim: int = 4096  # the transformer's cross_attention_dim: the video connector's width
    audio_dim: int = 2048  # audio_cross_attention_dim
    hidden: int = 256  # pooler_hidden_dim
    queries: int = 1  # num_queries
    heads: int = 4  # num_pooler_heads
    mlp_hidden: int = 256

    @classmethod
    def from_config(cls, config: dict) -> DurationHeadConfig:
        """From a checkpoint's ``config`` metadata: the input widths from ``transformer``, the rest from
        ``duration_head`` (the official defaults where absent, as the official configurator reads it)."""
        t, d = config.get("transformer", {}), config.get("duration_head", {})
        return cls(video_dim=int(t.get("cross_attention_dim", cls.video_dim)),
                   audio_dim=int(t.get("audio_cross_attention_dim", cls.audio_dim)),
                   hidden=int(d.get("pooler_hidden_dim", cls.hidden)), queries=int(d.get("num_queries", cls.queries)),
                   heads=int(d.get("num_pooler_heads", cls.heads)), mlp_hidden=int(d.get("mlp_hidden", cls.mlp_hidden)))


class PackedAttention(nn.Module):
    """Multi-head attention whose q, k and v projections are one (3E, E) matrix and (3E,) bias."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"duration head: pooler width {dim} is not a multiple of its {heads} heads")
        self.heads = heads
        self.in_proj_weight = mx.zeros((3 * dim, dim))
        self.in_proj_bias = mx.zeros((3 * dim,))
        self.out_proj = nn.Linear(dim, dim)

    def __call__(self, queries: mx.array, tokens: mx.array) -> mx.array:
        b, nq, e = queries.shape
        w, bias = self.in_proj_weight, self.in_proj_bias
        q = queries @ w[:e].T + bias[:e]
        k = tokens @ w[e:2 * e].T + bias[e:2 * e]
        v = tokens @ w[2 * e:].T + bias[2 * e:]

        def split(x: mx.array) -> mx.array:  # (B, T, E) -> (B, heads, T, E / heads)
            return x.reshape(b, x.shape[1], self.heads, e // self.heads).transpose(0, 2, 1, 3)

        out = attend(split(q), split(k), split(v))  # scale 1/sqrt(head width), as torch's MultiheadAttention
        return self.out_proj(out.transpose(0, 2, 1, 3).reshape(b, nq, e))


class AttentionPooler(nn.Module):
    def __init__(self, dim: int, queries: int, heads: int):
        super().__init__()
        self.query_tokens = mx.zeros((queries, dim))
        self.cross_attn = PackedAttention(dim, heads)

    def __call__(self, tokens: mx.array) -> mx.array:
        b = tokens.shape[0]
        return self.cross_attn(mx.broadcast_to(self.query_tokens[None], (b, *self.query_tokens.shape)), tokens)


class DurationHead(nn.Module):
    def __init__(self, cfg: DurationHeadConfig):
        super().__init__()
        self.cfg = cfg
        self.video_input_proj = nn.Linear(cfg.video_dim, cfg.hidden)
        self.video_modality_emb = mx.zeros((cfg.hidden,))
        self.audio_input_proj = nn.Linear(cfg.audio_dim, cfg.hidden)
        self.audio_modality_emb = mx.zeros((cfg.hidden,))
        self.attention_pooler = AttentionPooler(cfg.hidden, cfg.queries, cfg.heads)
        self.mlp_hidden = nn.Linear(cfg.hidden * cfg.queries, cfg.mlp_hidden)
        self.mlp_out = nn.Linear(cfg.mlp_hidden, 1)

    def __call__(self, video: mx.array | None = None, audio: mx.array | None = None) -> mx.array:
        """Seconds, (B,), from video connector tokens (B, Tv, video_dim) and/or audio ones (B, Ta, audio_dim)."""
        groups = []
        if video is not None:
            groups.append(self.video_input_proj(video) + self.video_modality_emb)
        if audio is not None:
            groups.append(self.audio_input_proj(audio) + self.audio_modality_emb)
        if not groups:
            raise ValueError("duration head: give the video tokens, the audio tokens or both")
        pooled = self.attention_pooler(mx.concatenate(groups, axis=1))
        h = gelu_tanh(self.mlp_hidden(pooled.reshape(pooled.shape[0], -1)))
        return mx.exp(self.mlp_out(h)[..., 0])


def predicted_frames(seconds: float, fps: float, min_seconds: float = 1.0, max_seconds: float = 20.0,
                     time_scale: int = 8) -> int:
    """A predicted duration as a frame count on the VAE's 8k+1 grid, as the official DurationPredictor gives it:
    seconds x fps rounded, clamped to [min_seconds, max_seconds] worth of frames, then floored to the grid (or,
    where flooring falls below the minimum, the next grid point up, never past the maximum)."""
    lo, hi = round(min_seconds * fps), round(max_seconds * fps)
    raw = max(lo, min(round(seconds * fps), hi))
    if raw < 1:
        raise ValueError(f"duration head: {seconds} s at {fps} fps is no frame at all")
    frames = (raw - 1) // time_scale * time_scale + 1
    if frames < lo:
        frames = min(-(-(lo - 1) // time_scale) * time_scale + 1, hi)
    return frames
