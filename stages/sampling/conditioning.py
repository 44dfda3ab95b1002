"""Conditioning items applied to a stream's token state, as the official ``ConditioningItem``s do (v1.2.0).

A :class:`TokenLatents` is one stream's state in token layout: the noisy latent, the clean latent kept
where the denoise mask is 0, the per-token denoise mask, the RoPE positions of every token, and the
self-attention strengths when some item asks for them. The target's own tokens come first
(``target_tokens``); items that add tokens (keyframes, IC-LoRA references) append them after, and
:meth:`TokenLatents.target` drops them again when the stage ends.

The order is the official one: build the empty state (or from an initial latent), apply the items in
order, then noise (:func:`noised`), then freeze a frozen stream. Masks and positions are small host-side
numpy arrays; latents are MLX arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import mlx.core as mx
import numpy as np

from ltx2.spec.geometry import VIDEO_TIME_SCALE

from .patchify import patchify_audio, patchify_video
from .positions import audio_positions, video_positions


@dataclass(frozen=True)
class TokenLatents:
    latent: mx.array  # (B, N, C) the noisy tokens
    clean: mx.array  # (B, N, C) what a token with mask 0 is kept at
    mask: np.ndarray  # (B, N) float32 denoise mask: 1 generate, 0 keep clean, between: partly
    positions: np.ndarray  # (B, axes, N, 2) float32 [start, end) per axis
    target_tokens: int  # the first target_tokens tokens are the output; the rest were appended by items
    attention: np.ndarray | None = None  # (B, N, N) float32 self-attention strengths in [0, 1]; None: all 1
    frozen: bool = False  # the stream is kept as given: its sigma is 0 in the transformer

    @property
    def tokens(self) -> int:
        return int(self.latent.shape[1])

    def target(self, x: mx.array | None = None) -> mx.array:
        """``x`` (default the noisy latent) without the appended tokens (the official clear_conditioning)."""
        return (self.latent if x is None else x)[:, :self.target_tokens]


def video_tokens(grid: tuple[int, int, int], channels: int, fps: float, initial: mx.array | None = None,
                 batch: int = 1) -> TokenLatents:
    """The empty video state of a ``grid`` (latent frames, height, width) clip, or ``initial`` (B, C, F, H, W)'s."""
    f, h, w = grid
    if initial is None:
        latent = mx.zeros((batch, f * h * w, channels), dtype=mx.float32)
    else:
        if tuple(initial.shape[1:]) != (channels, f, h, w):
            raise ValueError(f"initial video latent {tuple(initial.shape)} is not a {(channels, f, h, w)} grid")
        latent = patchify_video(initial)
    return TokenLatents(latent, latent, np.ones(latent.shape[:2], np.float32),
                        np.asarray(video_positions(f, h, w, fps, batch=latent.shape[0])), f * h * w)


def audio_tokens(frames: int, channels: int, mel_bins: int, initial: mx.array | None = None,
                 batch: int = 1) -> TokenLatents:
    """The empty audio state of ``frames`` latent frames, or ``initial`` (B, C, T, M)'s."""
    if initial is None:
        latent = mx.zeros((batch, frames, channels * mel_bins), dtype=mx.float32)
    else:
        if tuple(initial.shape[1:]) != (channels, frames, mel_bins):
            raise ValueError(f"initial audio latent {tuple(initial.shape)} is not {(channels, frames, mel_bins)}")
        latent = patchify_audio(initial)
    return TokenLatents(latent, latent, np.ones(latent.shape[:2], np.float32),
                        np.asarray(audio_positions(frames, batch=latent.shape[0])), frames)


def replace_frame(state: TokenLatents, latent: mx.array, latent_index: int, strength: float) -> TokenLatents:
    """VideoConditionByLatentIndex: ``latent`` (B, C, F', H, W) becomes the clean latent from latent frame
    ``latent_index`` on, with denoise mask ``1 - strength`` there."""
    tokens = patchify_video(latent)
    per_frame = tokens.shape[1] // latent.shape[2]
    start = latent_index * per_frame
    stop = start + tokens.shape[1]
    if stop > state.target_tokens:
        raise ValueError(f"a {latent.shape[2]}-frame latent at latent frame {latent_index} runs past the clip's "
                         f"{state.target_tokens // per_frame} latent frames")
    clean = mx.concatenate([state.clean[:, :start], tokens.astype(state.clean.dtype), state.clean[:, stop:]], axis=1)
    mask = state.mask.copy()
    mask[:, start:stop] = np.float32(1.0 - strength)
    return replace(state, clean=clean, mask=mask)


def keyframe_positions(latent_shape: tuple[int, ...], frame: int, fps: float) -> np.ndarray:
    """Positions of keyframe tokens placed at pixel frame ``frame`` (VideoConditionByKeyframeIndex): the latent's
    own pixel grid (causal fix only at frame 0), shifted by ``frame``; a one-frame latent spans one pixel frame."""
    b, _, f, h, w = latent_shape
    pos = np.asarray(video_positions(f, h, w, 1.0, batch=b, causal_fix=frame == 0)).copy()
    pos[:, 0] += np.float32(frame)
    if f == 1:
        pos[:, 0, :, 1] = pos[:, 0, :, 0] + 1
    pos[:, 0] = pos[:, 0] / np.float32(fps)
    return pos


def reference_positions(latent_shape: tuple[int, ...], fps: float, downscale_factor: int) -> np.ndarray:
    """Positions of IC-LoRA reference tokens (VideoConditionByReferenceLatent, temporal scale 1): the reference's
    own grid in seconds, its height and width scaled up to the target's by ``downscale_factor``."""
    b, _, f, h, w = latent_shape
    pos = np.asarray(video_positions(f, h, w, fps, batch=b)).copy()
    if downscale_factor != 1:
        pos[:, 1:] = pos[:, 1:] * np.float32(downscale_factor)
    return pos


def append(state: TokenLatents, latent: mx.array, positions: np.ndarray, strength: float,
           attention: np.ndarray | float | None = None) -> TokenLatents:
    """Append ``latent``'s tokens as conditioning: placeholder zeros in the noisy latent, the tokens as the clean
    latent, denoise mask ``1 - strength``. ``attention`` (a weight per new token, (B, M), or one number): how
    strongly they and the target's tokens attend to each other (ConditioningItemAttentionStrengthWrapper);
    None: no mask of their own (all 1 if the state already has one)."""
    tokens = patchify_video(latent).astype(state.clean.dtype)
    b, m = tokens.shape[:2]
    mask = np.concatenate([state.mask, np.full((b, m), 1.0 - strength, np.float32)], axis=1)
    if attention is None and state.attention is None:
        new_attention = None
    else:
        weights = np.ones((b, m), np.float32) if attention is None else np.broadcast_to(
            np.asarray(attention, np.float32), (b, m))
        new_attention = _grow_attention(state, weights)
    return replace(state, latent=mx.concatenate([state.latent, mx.zeros_like(tokens)], axis=1),
                   clean=mx.concatenate([state.clean, tokens], axis=1), mask=mask,
                   positions=np.concatenate([state.positions, positions.astype(np.float32)], axis=2),
                   attention=new_attention)


def _grow_attention(state: TokenLatents, weights: np.ndarray) -> np.ndarray:
    """The (B, N+M, N+M) strengths after appending M tokens of per-token ``weights``: the old block kept (all 1
    when there was none), the new tokens fully among themselves, ``weights`` between them and the target's
    tokens, 0 between them and tokens earlier items appended (groups of conditioning do not see each other)."""
    b, m = weights.shape
    n, t = state.tokens, state.target_tokens
    out = np.zeros((b, n + m, n + m), np.float32)
    out[:, :n, :n] = 1.0 if state.attention is None else state.attention
    out[:, n:, n:] = 1.0
    out[:, :t, n:] = weights[:, None, :]
    out[:, n:, :t] = weights[:, :, None]
    return out


def video_window(state: TokenLatents, start: float, end: float) -> TokenLatents:
    """TemporalRegionMask on video: mask 1 on the target tokens whose time span [t0, t1) meets [start, end), 0 on
    the rest (kept). Spans come from the positions (pixel frames with the causal fix, in seconds)."""
    return _window(state, state.positions[:, 0, :state.target_tokens], start, end)


def audio_window(state: TokenLatents, start: float, end: float) -> TokenLatents:
    """TemporalRegionMask on audio: the same rule over each latent frame's span in seconds."""
    return _window(state, state.positions[:, 0, :state.target_tokens], start, end)


def _window(state: TokenLatents, spans: np.ndarray, start: float, end: float) -> TokenLatents:
    inside = (spans[..., 1] > np.float32(start)) & (spans[..., 0] < np.float32(end))
    mask = state.mask.copy()
    mask[:, :state.target_tokens] = inside.astype(np.float32)
    return replace(state, mask=mask)


def noised(state: TokenLatents, noise: mx.array, noise_scale: float) -> TokenLatents:
    """The official GaussianNoiser: the latent moved ``noise_scale`` of the way to ``noise``, then each token
    ``mask`` of the way from its clean latent to that (mask 0: exactly the clean latent)."""
    x = _lerp(state.latent.astype(mx.float32), noise.astype(mx.float32), noise_scale)
    m = mx.array(state.mask)[..., None]
    x = _lerp(state.clean.astype(mx.float32), x, m)
    return replace(state, latent=x.astype(state.latent.dtype))


def _lerp(a: mx.array, b: mx.array, w: mx.array | float) -> mx.array:
    # torch.lerp's two-sided form (exact at both ends: w 0 gives a, w 1 gives b)
    w = mx.array(w, dtype=mx.float32) if not isinstance(w, mx.array) else w
    return mx.where(w < 0.5, a + w * (b - a), b - (b - a) * (1 - w))


def frozen(state: TokenLatents) -> TokenLatents:
    """The stream kept as given (audio-to-video): mask 0 everywhere, and its sigma 0 in the transformer."""
    return replace(state, mask=np.zeros_like(state.mask), frozen=True)


def latent_index_of(frame: int) -> int:
    """The latent frame whose last pixel frame is ``frame`` (a multiple of the VAE's 8; frame 0 is latent 0)."""
    if frame % VIDEO_TIME_SCALE:
        raise ValueError(f"frame {frame} is not a multiple of {VIDEO_TIME_SCALE}")
    return frame // VIDEO_TIME_SCALE
