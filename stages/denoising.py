"""The denoising loop shared by the denoise (stage 1) and refine (stage 2) stages.

State lives in token layout (patchified, (B, T, C)), as the transformer reads it. After each step
the caller's ``on_step`` gets the new state, so a stage can checkpoint it and a killed process
resumes from its last completed step with bit-identical results (the loop is deterministic given
the state: no random draw happens inside it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from ltx2.models.transformer import LTX2Transformer, ModalityInput

from .sampling import (GuiderParams, blend_clean, euler_step, guided_x0, pass_contexts, pass_perturbations,
                       repeat_for_passes)


@dataclass
class TokenState:
    video: mx.array  # (B, Tv, C) noisy video tokens
    audio: mx.array  # (B, Ta, Ca)


@dataclass
class Conditioning:
    """Prompt contexts and the fixed per-token facts of a run (positions, masks, clean latents)."""

    video_context: mx.array
    audio_context: mx.array
    video_positions: np.ndarray | mx.array
    audio_positions: np.ndarray | mx.array
    negative_video_context: mx.array | None = None
    negative_audio_context: mx.array | None = None
    video_mask: mx.array | None = None  # (B, Tv) 1 = denoise, 0 = keep clean (conditioning); None: all 1
    audio_mask: mx.array | None = None
    video_clean: mx.array | None = None  # the clean tokens kept where the mask is 0
    audio_clean: mx.array | None = None


class Sampler:
    """Euler sampling of the joint video+audio state, guided (MultiModalGuider) or not."""

    def __init__(self, model: LTX2Transformer, cond: Conditioning,
                 guidance: tuple[GuiderParams, GuiderParams] | None = None, passes_per_call: int | None = None):
        self.model = model
        self.cond = cond
        self.guidance = guidance
        self.passes_per_call = passes_per_call
        self._tables: dict[int, object] = {}

    def _positions_tables(self, n: int):
        # RoPE tables depend only on positions: build once per stacked batch size and reuse every step
        if n not in self._tables:
            vp = np.asarray(self.cond.video_positions)
            ap = np.asarray(self.cond.audio_positions)
            self._tables[n] = self.model.positional_tables(np.concatenate([vp] * n), np.concatenate([ap] * n))
        return self._tables[n]

    def _inputs(self, state: TokenState, sigma: float, n: int, vctx, actx, enabled=(True, True)):
        def mask(m, x):
            return mx.ones(x.shape[:2], dtype=mx.float32) if m is None else m.astype(mx.float32)

        vm, am = mask(self.cond.video_mask, state.video), mask(self.cond.audio_mask, state.audio)
        s = mx.array(sigma, dtype=mx.float32)
        video = ModalityInput(latent=repeat_for_passes(state.video, n), sigma=s,
                              timesteps=repeat_for_passes(vm * s, n), positions=None, context=vctx,
                              enabled=enabled[0])
        audio = ModalityInput(latent=repeat_for_passes(state.audio, n), sigma=s,
                              timesteps=repeat_for_passes(am * s, n), positions=None, context=actx,
                              enabled=enabled[1])
        return video, audio

    def x0(self, state: TokenState, sigma: float, step: int,
           last: tuple[mx.array, mx.array] | None = None) -> tuple[mx.array, mx.array]:
        """The (guided) clean-latent prediction for one step."""
        c = self.cond
        if self.guidance is None:
            v, a = self._inputs(state, sigma, 1, c.video_context, c.audio_context)
            return self.model.denoise(v, a, None, self._positions_tables(1))
        b = state.video.shape[0]

        def run(passes: Sequence) -> tuple[mx.array, mx.array]:
            n = len(passes)
            enabled = (passes[0].video_enabled, passes[0].audio_enabled)
            v, a = self._inputs(state, sigma, n, pass_contexts(passes, c.video_context, c.negative_video_context),
                                pass_contexts(passes, c.audio_context, c.negative_audio_context), enabled)
            return self.model.denoise(v, a, pass_perturbations(passes, b), self._positions_tables(n))

        vg, ag = self.guidance
        return guided_x0(run, vg, ag, step=step, last=last, passes_per_call=self.passes_per_call)

    def run(self, state: TokenState, sigmas: Sequence[float], start: int = 0,
            on_step: Callable[[int, TokenState], None] | None = None) -> TokenState:
        """Steps ``start .. len(sigmas)-2``; ``on_step(k, state)`` after step k completes (k counts from 1)."""
        c = self.cond
        last = None
        for i in range(start, len(sigmas) - 1):
            v0, a0 = self.x0(state, float(sigmas[i]), i, last)
            last = (v0, a0)
            if c.video_mask is not None:
                v0 = blend_clean(v0, c.video_mask[..., None], c.video_clean)
            if c.audio_mask is not None:
                a0 = blend_clean(a0, c.audio_mask[..., None], c.audio_clean)
            state = TokenState(euler_step(state.video, v0, sigmas[i], sigmas[i + 1]),
                               euler_step(state.audio, a0, sigmas[i], sigmas[i + 1]))
            mx.eval(state.video, state.audio)
            if on_step is not None:
                on_step(i + 1, state)
        return state
