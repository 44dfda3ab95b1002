"""Sigma schedules: the LTX-2 shifted schedule (guided pipelines) and the fixed distilled lists.

Schedules are short host-side vectors, so they are computed with numpy in float32, the precision
the official code produces them in (its stage-1 loop reads them as float32 values).
"""

from __future__ import annotations

import math

import numpy as np

from ltx2.spec.schedules import DISTILLED_SIGMAS, STAGE2_DISTILLED_SIGMAS

# The shift grows linearly with the number of latent tokens between these two anchors.
BASE_SHIFT_TOKENS = 1024
MAX_SHIFT_TOKENS = 4096
DEFAULT_TOKENS = MAX_SHIFT_TOKENS  # the official pipelines never pass a latent, so they always use this


def shift_for_tokens(tokens: int, max_shift: float = 2.05, base_shift: float = 0.95) -> float:
    """Log-SNR shift for a latent of ``tokens`` tokens (linear in the token count)."""
    slope = (max_shift - base_shift) / (MAX_SHIFT_TOKENS - BASE_SHIFT_TOKENS)
    return tokens * slope + (base_shift - slope * BASE_SHIFT_TOKENS)


def _linspace_f32(start: float, end: float, n: int) -> np.ndarray:
    # float32 linspace filled from both ends (first half from start, second half from end), the way
    # torch.linspace rounds; numpy's float64 linspace differs in the last bit for some points
    step = (np.float32(end) - np.float32(start)) / np.float32(n - 1)
    i = np.arange(n)
    head = np.float32(start) + step * i.astype(np.float32)
    tail = np.float32(end) - step * (n - 1 - i).astype(np.float32)
    return np.where(i < n // 2, head, tail).astype(np.float32)


def ltx2_sigmas(steps: int, tokens: int = DEFAULT_TOKENS, max_shift: float = 2.05, base_shift: float = 0.95,
                stretch: bool = True, terminal: float = 0.1) -> np.ndarray:
    """``steps + 1`` descending sigmas from 1 to 0 (float32), as LTX2Scheduler produces them.

    Uniform times are warped by sigma = e^s / (e^s + 1/t - 1) with the token-dependent shift s, then
    (``stretch``) rescaled in 1 - sigma so that the last non-zero sigma lands on ``terminal``.
    ``tokens`` is the latent's F*H*W; the official pipelines use the default (4096) whatever the size.
    """
    if int(steps) < 1:
        raise ValueError(f"steps={steps}: a schedule needs at least one step")
    if not 0.0 <= terminal < 1.0:
        raise ValueError(f"terminal={terminal}: must lie in [0, 1)")
    exp_shift = math.exp(shift_for_tokens(tokens, max_shift, base_shift))
    t = _linspace_f32(1.0, 0.0, int(steps) + 1)
    nonzero = t != 0
    sigmas = np.zeros_like(t)
    # float32 arithmetic throughout, as the reference computes it; its `scalar / tensor` is evaluated as
    # reciprocal(tensor) * scalar, which is why the first sigma lands a few ulps below 1 (and the
    # one-step schedule is finite after the stretch), so the same form is kept here
    denom = np.float32(exp_shift) + (np.float32(1.0) / t[nonzero] - np.float32(1.0))
    sigmas[nonzero] = (np.float32(1.0) / denom) * np.float32(exp_shift)
    if stretch:
        nz = sigmas != 0
        one_minus = np.float32(1.0) - sigmas[nz]
        scale = one_minus[-1] / np.float32(1.0 - terminal)
        sigmas[nz] = np.float32(1.0) - one_minus / scale
    return sigmas.astype(np.float32)


def distilled_sigmas(stage: int = 1) -> np.ndarray:
    """The distilled schedule as float32: stage 1 (8 steps from pure noise) or stage 2 (3 refine steps)."""
    if stage == 1:
        return np.array(DISTILLED_SIGMAS, np.float32)
    if stage == 2:
        return np.array(STAGE2_DISTILLED_SIGMAS, np.float32)
    raise ValueError(f"stage={stage}: the distilled schedules exist for stage 1 and stage 2 only")
