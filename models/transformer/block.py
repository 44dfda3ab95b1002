"""One audio-video transformer block and the per-stream state that flows through the stack."""

from __future__ import annotations

from dataclasses import dataclass, replace

import mlx.core as mx
import mlx.nn as nn

from ltx2.models.cpu_math import gelu_tanh

from .attention import Attention
from .config import BlockConfig
from .perturbations import BlockSkip
from .rope import RopeTable

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
    # (B, 1 or T, 6 * D) shift/scale/gate for self-attention and feed-forward, from each token's own
    # timestep; 9 * D with cross-attention AdaLN (then rows 6-8 modulate the text cross-attention's queries)
    modulation: mx.array
    embedded_timestep: mx.array  # (B, 1 or T, D): drives the output modulation
    rope: RopeTable  # self-attention RoPE
    cross_rope: RopeTable  # time-only RoPE for the audio<->video attention
    # (B, 1 or T, 4 * D): scale/shift of this stream's tokens in a2v and v2a, from each token's OWN timestep
    # (sigma x denoise mask; the v1.2.0 rule: ltx-core 1.0.0 took the other stream's sigma here)
    cross_modulation: mx.array
    cross_gate: mx.array  # (B, 1, D): gate of the attention writing into this stream, from the OTHER stream's sigma
    self_mask: mx.array | None = None  # additive (B, 1, T, T) or None
    enabled: bool = True  # False: tokens pass through unchanged (still read by the other stream)
    # (B, 1, 2 * D) shift/scale of the text keys/values from this stream's sigma (cross-attention AdaLN only)
    prompt_modulation: mx.array | None = None


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
        c = config
        video_dim, video_heads, video_head_dim = c.video_dim, c.video_heads, c.video_head_dim
        audio_dim, audio_heads, audio_head_dim = c.audio_dim, c.audio_heads, c.audio_head_dim
        self.eps = eps = c.eps
        self.cross_attention_adaln = c.cross_attention_adaln
        gated = c.gated_attention
        n_ada = c.adaln_params
        self.attn1 = Attention(video_dim, video_heads, video_head_dim, eps=eps, gated=gated)
        self.attn2 = Attention(video_dim, video_heads, video_head_dim, context_dim=video_dim, eps=eps, gated=gated)
        self.ff = FeedForward(video_dim, bias=c.ff_bias)
        self.scale_shift_table = mx.zeros((n_ada, video_dim))

        self.audio_attn1 = Attention(audio_dim, audio_heads, audio_head_dim, eps=eps, gated=gated)
        self.audio_attn2 = Attention(audio_dim, audio_heads, audio_head_dim, context_dim=audio_dim, eps=eps,
                                     gated=gated)
        self.audio_ff = FeedForward(audio_dim, bias=c.ff_bias)
        self.audio_scale_shift_table = mx.zeros((n_ada, audio_dim))

        # Both directions run in the audio head layout (audio heads x audio head_dim).
        self.audio_to_video_attn = Attention(video_dim, audio_heads, audio_head_dim, context_dim=audio_dim, eps=eps,
                                             gated=gated)
        self.video_to_audio_attn = Attention(audio_dim, audio_heads, audio_head_dim, context_dim=video_dim, eps=eps,
                                             gated=gated)
        # rows: a2v scale, a2v shift, v2a scale, v2a shift, gate of the attention writing into this stream
        self.scale_shift_table_a2v_ca_audio = mx.zeros((5, audio_dim))
        self.scale_shift_table_a2v_ca_video = mx.zeros((5, video_dim))

        if c.cross_attention_adaln:
            # rows: shift, scale of the text keys/values (plus the model-level prompt AdaLN of sigma)
            self.prompt_scale_shift_table = mx.zeros((2, video_dim))
            self.audio_prompt_scale_shift_table = mx.zeros((2, audio_dim))

    def _self_and_text(self, s: StreamState, attn1: Attention, attn2: Attention, table: mx.array,
                       prompt_table: mx.array | None, skip: BlockSkip) -> mx.array:
        shift, scale, gate = _ada(table, s.modulation, range(0, 3))
        h = rms_norm(s.x, self.eps) * (1 + scale) + shift
        x = s.x + attn1(h, rope=s.rope, mask=s.self_mask, value_only=skip.all, keep=skip.keep) * gate
        xn = rms_norm(x, self.eps)
        if prompt_table is None:
            return x + attn2(xn, s.context, mask=s.context_mask)
        # cross-attention AdaLN: queries modulated by the token's timestep (rows 6-8), keys/values (the
        # text) by this block's prompt table plus the prompt AdaLN of the stream's sigma
        q_shift, q_scale, q_gate = _ada(table, s.modulation, range(6, 9))
        kv_shift, kv_scale = _ada(prompt_table, s.prompt_modulation, range(0, 2))
        context = s.context * (1 + kv_scale) + kv_shift
        return x + attn2(xn * (1 + q_scale) + q_shift, context, mask=s.context_mask) * q_gate

    def _feed_forward(self, x: mx.array, s: StreamState, ff: FeedForward, table: mx.array) -> mx.array:
        shift, scale, gate = _ada(table, s.modulation, range(3, 6))
        return x + ff(rms_norm(x, self.eps) * (1 + scale) + shift) * gate

    @staticmethod
    def _cross_ada(table: mx.array, s: StreamState, rows: range) -> tuple[mx.array, mx.array]:
        scale, shift = _ada(table[:4], s.cross_modulation, rows)
        return scale, shift

    def __call__(self, video: StreamState, audio: StreamState, skips: BlockSkips) -> tuple[StreamState, StreamState]:
        vx, ax = video.x, audio.x
        adaln = self.cross_attention_adaln
        if video.enabled:
            vx = self._self_and_text(video, self.attn1, self.attn2, self.scale_shift_table,
                                     self.prompt_scale_shift_table if adaln else None, skips.video_self)
        if audio.enabled:
            ax = self._self_and_text(audio, self.audio_attn1, self.audio_attn2, self.audio_scale_shift_table,
                                     self.audio_prompt_scale_shift_table if adaln else None, skips.audio_self)
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
