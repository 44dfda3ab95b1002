"""One audio-video transformer block and the per-stream state that flows through the stack."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import mlx.core as mx
import mlx.nn as nn

from .attention import Attention
from .config import BlockConfig, TransformerConfigError
from .perturbations import BlockSkip
from .rope import RopeTable

_GELU_C = math.sqrt(2.0 / math.pi)


def gelu_tanh(x: mx.array) -> mx.array:
    return 0.5 * x * (1.0 + mx.tanh(_GELU_C * (x + 0.044715 * x * x * x)))


def rms_norm(x: mx.array, eps: float) -> mx.array:
    return mx.fast.rms_norm(x, None, eps)


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4, bias: bool = True):
        super().__init__()
        self.proj_in = nn.Linear(dim, dim * mult, bias=bias)
        self.proj_out = nn.Linear(dim * mult, dim, bias=bias)

    def __call__(self, x: mx.array) -> mx.array:
        return self.proj_out(gelu_tanh(self.proj_in(x)))


@dataclass(frozen=True)
class StreamState:
    """One modality's tokens and everything the blocks condition them on (prepared once per call)."""

    x: mx.array  # (B, T, D) hidden tokens
    context: mx.array  # (B, S, D) projected text context
    context_mask: mx.array | None  # additive (B, 1, 1, S) or None
    modulation: mx.array  # (B, 1 or T, 6 * D): shift/scale/gate for self-attention and feed-forward
    embedded_timestep: mx.array  # (B, 1 or T, D): drives the output modulation
    rope: RopeTable  # self-attention RoPE
    cross_rope: RopeTable  # time-only RoPE for the audio<->video attention
    cross_modulation: mx.array  # (B, 1, 4 * D): scale/shift for a2v and v2a, from the other stream's sigma
    cross_gate: mx.array  # (B, 1, D)
    self_mask: mx.array | None = None  # additive (B, 1, T, T) or None
    enabled: bool = True  # False: tokens pass through unchanged (still read by the other stream)


def _ada(table: mx.array, modulation: mx.array, rows: range) -> list[mx.array]:
    """Per-token modulation vectors: learned table row + timestep-derived row (table is (N, D))."""
    n, d = table.shape
    b, t, _ = modulation.shape
    mod = modulation.reshape(b, t, n, d)
    return [table[i] + mod[:, :, i] for i in rows]


@dataclass(frozen=True)
class BlockSkips:
    video_self: BlockSkip
    audio_self: BlockSkip
    a2v: BlockSkip
    v2a: BlockSkip


class AVTransformerBlock(nn.Module):
    """Video and audio streams, each: self-attention, text cross-attention; then audio->video and
    video->audio cross-attention; then each stream's feed-forward. All residual, AdaLN-modulated."""

    def __init__(self, config: BlockConfig):
        super().__init__()
        on = [k for k in ("gated_attention", "cross_attention_adaln") if getattr(config, k)]
        if on:
            raise TransformerConfigError(f"transformer block with {', '.join(on)}: these LTX-2.3 block options are "
                                         "not implemented; only the LTX-2 (19B) block is")
        c = config
        video_dim, video_heads, video_head_dim = c.video_dim, c.video_heads, c.video_head_dim
        audio_dim, audio_heads, audio_head_dim = c.audio_dim, c.audio_heads, c.audio_head_dim
        self.eps = eps = c.eps
        self.attn1 = Attention(video_dim, video_heads, video_head_dim, eps=eps)
        self.attn2 = Attention(video_dim, video_heads, video_head_dim, context_dim=video_dim, eps=eps)
        self.ff = FeedForward(video_dim, bias=c.ff_bias)
        self.scale_shift_table = mx.zeros((6, video_dim))

        self.audio_attn1 = Attention(audio_dim, audio_heads, audio_head_dim, eps=eps)
        self.audio_attn2 = Attention(audio_dim, audio_heads, audio_head_dim, context_dim=audio_dim, eps=eps)
        self.audio_ff = FeedForward(audio_dim, bias=c.ff_bias)
        self.audio_scale_shift_table = mx.zeros((6, audio_dim))

        # Both directions run in the audio head layout (audio heads x audio head_dim).
        self.audio_to_video_attn = Attention(video_dim, audio_heads, audio_head_dim, context_dim=audio_dim, eps=eps)
        self.video_to_audio_attn = Attention(audio_dim, audio_heads, audio_head_dim, context_dim=video_dim, eps=eps)
        # rows: a2v scale, a2v shift, v2a scale, v2a shift, gate of the attention writing into this stream
        self.scale_shift_table_a2v_ca_audio = mx.zeros((5, audio_dim))
        self.scale_shift_table_a2v_ca_video = mx.zeros((5, video_dim))

    def _self_and_text(self, s: StreamState, attn1: Attention, attn2: Attention, table: mx.array,
                       skip: BlockSkip) -> mx.array:
        shift, scale, gate = _ada(table, s.modulation, range(0, 3))
        h = rms_norm(s.x, self.eps) * (1 + scale) + shift
        x = s.x + attn1(h, rope=s.rope, mask=s.self_mask, value_only=skip.all, keep=skip.keep) * gate
        return x + attn2(rms_norm(x, self.eps), s.context, mask=s.context_mask)

    def _feed_forward(self, x: mx.array, s: StreamState, ff: FeedForward, table: mx.array) -> mx.array:
        shift, scale, gate = _ada(table, s.modulation, range(3, 6))
        return x + ff(rms_norm(x, self.eps) * (1 + scale) + shift) * gate

    @staticmethod
    def _cross_ada(table: mx.array, s: StreamState, rows: range) -> tuple[mx.array, mx.array]:
        scale, shift = _ada(table[:4], s.cross_modulation, rows)
        return scale, shift

    def __call__(self, video: StreamState, audio: StreamState, skips: BlockSkips) -> tuple[StreamState, StreamState]:
        vx, ax = video.x, audio.x
        if video.enabled:
            vx = self._self_and_text(video, self.attn1, self.attn2, self.scale_shift_table, skips.video_self)
        if audio.enabled:
            ax = self._self_and_text(audio, self.audio_attn1, self.audio_attn2, self.audio_scale_shift_table,
                                     skips.audio_self)
        if not (video.enabled or audio.enabled):
            return video, audio

        # Both directions read the streams as they were before either cross-attention wrote.
        vn = rms_norm(vx, self.eps)
        an = rms_norm(ax, self.eps)
        tv, ta = self.scale_shift_table_a2v_ca_video, self.scale_shift_table_a2v_ca_audio
        vx_new, ax_new = vx, ax
        if video.enabled and not skips.a2v.all:
            v_scale, v_shift = self._cross_ada(tv, video, range(0, 2))
            a_scale, a_shift = self._cross_ada(ta, audio, range(0, 2))
            gate = tv[4] + video.cross_gate
            out = self.audio_to_video_attn(vn * (1 + v_scale) + v_shift, an * (1 + a_scale) + a_shift,
                                           rope=video.cross_rope, k_rope=audio.cross_rope) * gate
            vx_new = vx + (out if skips.a2v.keep is None else out * skips.a2v.keep)
        if audio.enabled and not skips.v2a.all:
            a_scale, a_shift = self._cross_ada(ta, audio, range(2, 4))
            v_scale, v_shift = self._cross_ada(tv, video, range(2, 4))
            gate = ta[4] + audio.cross_gate
            out = self.video_to_audio_attn(an * (1 + a_scale) + a_shift, vn * (1 + v_scale) + v_shift,
                                           rope=audio.cross_rope, k_rope=video.cross_rope) * gate
            ax_new = ax + (out if skips.v2a.keep is None else out * skips.v2a.keep)

        vx = self._feed_forward(vx_new, video, self.ff, self.scale_shift_table) if video.enabled else vx
        ax = self._feed_forward(ax_new, audio, self.audio_ff, self.audio_scale_shift_table) if audio.enabled else ax
        return replace(video, x=vx), replace(audio, x=ax)
