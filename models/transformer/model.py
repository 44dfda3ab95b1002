"""The LTX-2 audio-video diffusion transformer (LTX-2 19B and LTX-2.3 22B layouts): inputs -> blocks ->
velocities / x0."""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ltx2.models.cpu_math import gelu_tanh

from .block import AVTransformerBlock, BlockSkips, StreamState
from .config import TransformerConfig
from .perturbations import PerturbationArg, Skip, block_skip, per_batch
from .rope import RopeTable, rope_table
from .timestep import AdaLNSingle


@dataclass(frozen=True)
class ModalityInput:
    """One stream's input to the transformer (tokens already patchified).

    latent:     (B, T, C) noisy latent tokens.
    sigma:      scalar or (B,): the stream's noise level; gates the audio<->video cross-attention
                writing into the *other* stream, and (LTX-2.3) drives this stream's prompt AdaLN.
    timesteps:  (B, T), (B, T, 1) or (B,)/(B, 1): per-token noise level, sigma * denoise mask
                (0 for clean conditioning tokens such as an i2v first frame). Drives this stream's
                AdaLN, including its scale/shift in the audio<->video cross-attention.
    positions:  (B, axes, T, 2) [start, end) of each token per axis (video: t, y, x; audio: t).
                Only used when the forward call is not given precomputed ``PositionalTables``.
    context:    (B, S, caption_channels) text features from the embeddings connector (LTX-2.3: already
                projected to the stream's width on the text side).
    context_mask:   optional (B, S), 1 = attend, 0 = ignore.
    attention_mask: optional (B, T, T) in [0, 1]: self-attention strength (0 = blocked).
    enabled:    False: this stream's tokens pass through the blocks unchanged (a guidance
                skip-step); the other stream still reads them in cross-attention.
    """

    latent: mx.array
    sigma: mx.array | float
    timesteps: mx.array
    positions: mx.array | np.ndarray | None
    context: mx.array
    context_mask: mx.array | None = None
    attention_mask: mx.array | None = None
    enabled: bool = True


@dataclass(frozen=True)
class PositionalTables:
    """RoPE tables for one token layout; build once per run with ``LTX2Transformer.positional_tables``."""

    video: RopeTable
    video_cross: RopeTable
    audio: RopeTable
    audio_cross: RopeTable


class CaptionProjection(nn.Module):
    """Text features (caption_channels) -> stream width: linear, tanh-GELU, linear."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def __call__(self, x: mx.array) -> mx.array:
        return self.linear_2(gelu_tanh(self.linear_1(x)))


def _additive_context_mask(mask: mx.array | None, dtype) -> mx.array | None:
    if mask is None:
        return None
    if mx.issubdtype(mask.dtype, mx.floating):
        raise ValueError("context_mask must be a 0/1 integer or boolean mask of shape (B, S)")
    # 0 -> -max (excluded), 1 -> 0; a finite value keeps fully padded rows finite
    m = (mask.astype(dtype) - 1) * float(mx.finfo(dtype).max)
    return m.reshape(m.shape[0], 1, 1, m.shape[-1])


def _additive_self_mask(mask: mx.array | None, dtype) -> mx.array | None:
    if mask is None:
        return None
    # strength in [0, 1] -> log-space bias; 0 (or below) -> the most negative finite value
    lowest = float(mx.finfo(dtype).min)
    tiny = float(np.finfo(np.float32).tiny)
    m = mask.astype(mx.float32)
    bias = mx.where(m > 0, mx.log(mx.maximum(m, tiny)), lowest).astype(dtype)
    return bias[:, None]


class LTX2Transformer(nn.Module):
    """LTX-2 / LTX-2.3 audio-video DiT. Call with two ``ModalityInput``s; returns (video, audio) velocities.

    LTX-2.3 (``config.cross_attention_adaln`` / ``gated_attention``, ``caption_projection`` off): 9 AdaLN
    rows per block, a prompt AdaLN of sigma per stream, per-head attention gates, and no caption projection."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        c = config
        self.config = c
        dv, da = c.inner_dim, c.audio_inner_dim

        self.patchify_proj = nn.Linear(c.in_channels, dv)
        if c.caption_projection:
            self.caption_projection = CaptionProjection(c.caption_channels, dv)
        self.adaln_single = AdaLNSingle(dv, c.adaln_params)
        self.scale_shift_table = mx.zeros((2, dv))
        self.proj_out = nn.Linear(dv, c.out_channels)

        self.audio_patchify_proj = nn.Linear(c.audio_in_channels, da)
        if c.caption_projection:
            self.audio_caption_projection = CaptionProjection(c.caption_channels, da)
        self.audio_adaln_single = AdaLNSingle(da, c.adaln_params)
        self.audio_scale_shift_table = mx.zeros((2, da))
        self.audio_proj_out = nn.Linear(da, c.audio_out_channels)

        if c.prompt_adaln:  # text keys/values shift/scale from the stream's sigma
            self.prompt_adaln_single = AdaLNSingle(dv, 2)
            self.audio_prompt_adaln_single = AdaLNSingle(da, 2)

        # audio<->video cross-attention conditioning: scale/shift from each token's own timestep, the gate
        # from the other stream's sigma
        self.av_ca_video_scale_shift_adaln_single = AdaLNSingle(dv, 4)
        self.av_ca_audio_scale_shift_adaln_single = AdaLNSingle(da, 4)
        self.av_ca_a2v_gate_adaln_single = AdaLNSingle(dv, 1)
        self.av_ca_v2a_gate_adaln_single = AdaLNSingle(da, 1)

        self.transformer_blocks = [AVTransformerBlock(c.block) for _ in range(c.num_layers)]

    # ------------------------------------------------------------------ setup
    @property
    def dtype(self) -> mx.Dtype:
        """The compute dtype: the activations' (its float weights are held in it; see models/precision.py)."""
        return self.patchify_proj.weight.dtype

    def set_query_chunk(self, n: int | None) -> None:
        """Queries per attention call (None: no chunking). Bounds the CPU score-matrix memory."""
        for blk in self.transformer_blocks:
            for a in (blk.attn1, blk.attn2, blk.audio_attn1, blk.audio_attn2,
                      blk.audio_to_video_attn, blk.video_to_audio_attn):
                a.query_chunk = n

    def positional_tables(self, video_positions, audio_positions) -> PositionalTables:
        """RoPE tables for these token positions (host-side, float64 trig; reuse across steps)."""
        c = self.config
        vpos = np.asarray(video_positions, dtype=np.float32)
        apos = np.asarray(audio_positions, dtype=np.float32)
        theta = c.positional_embedding_theta
        cross = [c.cross_pe_max_pos]
        return PositionalTables(
            video=rope_table(vpos, c.inner_dim, c.num_attention_heads, c.positional_embedding_max_pos, theta),
            video_cross=rope_table(vpos[:, :1], c.audio_cross_attention_dim, c.num_attention_heads, cross, theta),
            audio=rope_table(apos, c.audio_inner_dim, c.audio_num_attention_heads,
                             c.audio_positional_embedding_max_pos, theta),
            audio_cross=rope_table(apos[:, :1], c.audio_cross_attention_dim, c.audio_num_attention_heads,
                                   cross, theta),
        )

    # ------------------------------------------------------------------ forward pieces
    def _stream(self, m: ModalityInput, other: ModalityInput, *, proj, caption, adaln, prompt_adaln, cross_adaln,
                gate_adaln, rope: RopeTable, cross_rope: RopeTable) -> StreamState:
        c = self.config
        dtype = proj.weight.dtype  # the compute dtype: latents and text enter in it (the state stays float32)
        x = proj(m.latent.astype(dtype))
        b = x.shape[0]
        ts = mx.array(m.timesteps).reshape(b, -1) * c.timestep_scale_multiplier
        modulation, embedded = adaln(ts)
        context = m.context.astype(dtype)
        context = context if caption is None else caption(context)
        prompt_mod = None
        if prompt_adaln is not None:
            own_sigma = mx.broadcast_to(mx.array(m.sigma, dtype=mx.float32).reshape(-1), (b,)).reshape(b, 1)
            prompt_mod, _ = prompt_adaln(own_sigma * c.timestep_scale_multiplier)
        # the v1.2.0 rule: each token's own timestep sets its scale/shift in the audio<->video attention
        # (ltx-core 1.0.0 used the other stream's sigma for all tokens), the other stream's sigma the gate
        cross_mod, _ = cross_adaln(ts)
        other_sigma = mx.broadcast_to(mx.array(other.sigma, dtype=mx.float32).reshape(-1), (b,)).reshape(b, 1)
        cross_gate, _ = gate_adaln(other_sigma * c.timestep_scale_multiplier
                                   * (c.av_ca_timestep_scale_multiplier / c.timestep_scale_multiplier))
        return StreamState(
            x=x, context=context, context_mask=_additive_context_mask(m.context_mask, x.dtype),
            modulation=modulation, embedded_timestep=embedded, rope=rope, cross_rope=cross_rope,
            cross_modulation=cross_mod, cross_gate=cross_gate,
            self_mask=_additive_self_mask(m.attention_mask, x.dtype), enabled=m.enabled,
            prompt_modulation=prompt_mod)

    def prepare(self, video: ModalityInput, audio: ModalityInput,
                tables: PositionalTables | None = None) -> tuple[StreamState, StreamState]:
        if tables is None:
            if video.positions is None or audio.positions is None:
                raise ValueError("give positions in both ModalityInputs or precomputed PositionalTables")
            tables = self.positional_tables(video.positions, audio.positions)
        c = self.config
        vs = self._stream(video, audio, proj=self.patchify_proj,
                          caption=self.caption_projection if c.caption_projection else None,
                          adaln=self.adaln_single, prompt_adaln=self.prompt_adaln_single if c.prompt_adaln else None,
                          cross_adaln=self.av_ca_video_scale_shift_adaln_single,
                          gate_adaln=self.av_ca_a2v_gate_adaln_single, rope=tables.video,
                          cross_rope=tables.video_cross)
        as_ = self._stream(audio, video, proj=self.audio_patchify_proj,
                           caption=self.audio_caption_projection if c.caption_projection else None,
                           adaln=self.audio_adaln_single,
                           prompt_adaln=self.audio_prompt_adaln_single if c.prompt_adaln else None,
                           cross_adaln=self.av_ca_audio_scale_shift_adaln_single,
                           gate_adaln=self.av_ca_v2a_gate_adaln_single, rope=tables.audio,
                           cross_rope=tables.audio_cross)
        return vs, as_

    @staticmethod
    def block_skips(perturbations: PerturbationArg, batch: int, index: int,
                    dtype: mx.Dtype = mx.float32) -> BlockSkips:
        """Block ``index``'s skips; ``dtype``: the activations' (a per-row keep mask must not widen them)."""
        p = per_batch(perturbations, batch)
        return BlockSkips(video_self=block_skip(p, Skip.VIDEO_SELF_ATTN, index, dtype),
                          audio_self=block_skip(p, Skip.AUDIO_SELF_ATTN, index, dtype),
                          a2v=block_skip(p, Skip.A2V_CROSS_ATTN, index, dtype),
                          v2a=block_skip(p, Skip.V2A_CROSS_ATTN, index, dtype))

    def finish(self, video: StreamState, audio: StreamState) -> tuple[mx.array, mx.array]:
        """Output norm, timestep shift/scale and projection back to latent channels."""
        eps = self.config.norm_eps

        def out(s: StreamState, table: mx.array, proj: nn.Linear) -> mx.array:
            shift = table[0] + s.embedded_timestep
            scale = table[1] + s.embedded_timestep
            h = mx.fast.layer_norm(s.x, None, None, eps)
            return proj(h * (1 + scale) + shift)

        return (out(video, self.scale_shift_table, self.proj_out),
                out(audio, self.audio_scale_shift_table, self.audio_proj_out))

    def __call__(self, video: ModalityInput, audio: ModalityInput, perturbations: PerturbationArg = None,
                 tables: PositionalTables | None = None) -> tuple[mx.array, mx.array]:
        """Velocities (video (B, T, out_channels), audio (B, T, audio_out_channels))."""
        vs, as_ = self.prepare(video, audio, tables)
        b = vs.x.shape[0]
        for i, blk in enumerate(self.transformer_blocks):
            vs, as_ = blk(vs, as_, self.block_skips(perturbations, b, i, vs.x.dtype))
        return self.finish(vs, as_)

    def denoise(self, video: ModalityInput, audio: ModalityInput, perturbations: PerturbationArg = None,
                tables: PositionalTables | None = None) -> tuple[mx.array, mx.array]:
        """Predicted clean latents x0 = latent - velocity * timestep, per token."""
        v_vel, a_vel = self(video, audio, perturbations, tables)
        return to_x0(video, v_vel), to_x0(audio, a_vel)


def to_x0(m: ModalityInput, velocity: mx.array) -> mx.array:
    b = velocity.shape[0]
    ts = mx.array(m.timesteps).astype(mx.float32).reshape(b, -1, 1)
    return (m.latent.astype(mx.float32) - velocity.astype(mx.float32) * ts).astype(m.latent.dtype)
