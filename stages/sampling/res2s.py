"""The res_2s sampler: a two-stage exponential Runge-Kutta step with SDE noise, as the official HQ pipeline runs.

Written from the method (an exponential integrator on the data-prediction ODE in log-sigma time), checked
against ltx-pipelines 1.0.0's loop on tests/fixtures/res2s. One step from sigma to sigma_next, with
h = log(sigma / sigma_next) and the midpoint c2 = 1/2 (sub-sigma sqrt(sigma * sigma_next)):

1. d1 = x0(x, sigma); the midpoint x_mid = x + h*a21*(d1 - x), a21 = c2*phi1(-c2*h);
2. x_mid gets fresh noise (``sde_mix`` from sigma to the sub-sigma), and where the step is small
   (h < 0.5, sigma > 0.03) the anchor is moved to the point whose deterministic midpoint is the noised one
   (the official loop iterates x_a = x_mid - h*a21*(d1 - x_a) to its fixed point; here it is solved directly);
3. d2 = x0(x_mid, sub-sigma); x_next = x_a + h*(b1*(d1 - x_a) + b2*(d2 - x_a)), b2 = phi2(-h)/c2,
   b1 = phi1(-h) - b2; x_next gets fresh noise (``sde_mix`` from sigma to sigma_next).

A schedule ending at 0 ends at 0.0011 instead, and a last step returns the x0 prediction there
(:func:`res2s_schedule`). The step keeps no state between steps besides x: with the noise drawn from keys
named by the step index, a resumed run repeats an uninterrupted one bit for bit.

Noise: a standard normal draw, standardised over the whole tensor and again per batch item
(:func:`standardized_noise`). The noise amount: sigma_up = sigma_next / 2, the rest of sigma_next's
variance kept deterministic (:func:`sde_coefficients`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import mlx.core as mx
import numpy as np

# The official loop replaces a final 0 by this sigma so every RK step has a finite log-step; the x0
# prediction at it is the result.
TERMINAL_SIGMA = 0.0011
MIDPOINT = 0.5  # c2: the stage-2 evaluation point (sub-sigma = sigma^(1-c2) * sigma_next^c2)
NOISE_FRACTION = 0.5  # sigma_up = NOISE_FRACTION * sigma_next at each noise injection
REFINE_MAX_H = 0.5  # the anchor is re-solved below this log-step...
REFINE_MIN_SIGMA = 0.03  # ...above this sigma


def res2s_schedule(sigmas: Sequence[float]) -> list[float]:
    """The sigmas the res_2s loop walks: a final 0 becomes (TERMINAL_SIGMA, 0), both float32 values."""
    out = [float(np.float32(s)) for s in sigmas]
    if len(out) >= 2 and out[-1] == 0.0:
        out = out[:-1] + [float(np.float32(TERMINAL_SIGMA)), 0.0]
    return out


def phi(j: int, z: float) -> float:
    """phi_j(z) = (e^z - sum_{k<j} z^k/k!) / z^j, with phi_j(0) = 1/j!."""
    if abs(z) < 1e-10:
        return 1.0 / math.factorial(j)
    return (math.exp(z) - sum(z ** k / math.factorial(k) for k in range(j))) / z ** j


@dataclass(frozen=True)
class Res2sStep:
    """The coefficients of one res_2s step (all host-side float64)."""

    sigma: float
    sigma_next: float
    h: float  # log(sigma / sigma_next)
    sub_sigma: float  # where the second evaluation happens
    a21: float
    b1: float
    b2: float

    @classmethod
    def between(cls, sigma: float, sigma_next: float) -> "Res2sStep":
        s, sn = float(np.float32(sigma)), float(np.float32(sigma_next))
        if not s > sn > 0:
            raise ValueError(f"a res_2s step needs sigma > sigma_next > 0, got {s} -> {sn}")
        h = -math.log(sn / s)
        b2 = phi(2, -h) / MIDPOINT
        return cls(s, sn, h, math.sqrt(s * sn), MIDPOINT * phi(1, -h * MIDPOINT), phi(1, -h) - b2, b2)

    @property
    def refines_anchor(self) -> bool:
        return self.h < REFINE_MAX_H and self.sigma > REFINE_MIN_SIGMA


def sde_coefficients(sigma_next, dtype=np.float64) -> tuple[float, float, float]:
    """(alpha_ratio, sigma_down, sigma_up) of a noise injection landing at ``sigma_next``, computed in ``dtype``
    (the reference computes the step-level ones in float32 and the sub-step ones in float64).

    sigma_up = sigma_next / 2 (never above 0.9999 sigma_next); the signal 1 - sigma_next plus the deterministic
    part sqrt(sigma_next^2 - sigma_up^2) rescale the sample (alpha_ratio), whose own noise level is then
    sigma_down = that deterministic part / alpha_ratio."""
    t = np.dtype(dtype).type
    sn = t(sigma_next)
    up = min(t(NOISE_FRACTION) * sn, sn * t(0.9999))
    residual = t(np.sqrt(max(sn * sn - up * up, t(0))))
    alpha = (t(1) - sn) + residual
    down = residual / alpha
    return float(alpha), float(down), float(up)


def sde_mix(anchor: mx.array, target: mx.array, sigma: float, sigma_next: float, noise: mx.array,
            dtype=np.float64) -> mx.array:
    """Re-noise the deterministic estimate ``target`` (at ``sigma_next``, reached from ``anchor`` at ``sigma``).

    The step's noise direction eps = (anchor - target) / (sigma - sigma_next) and its clean end
    anchor - sigma*eps are recombined at sigma_down, scaled by alpha_ratio, plus sigma_up of ``noise``."""
    alpha, down, up = sde_coefficients(sigma_next, dtype)
    t = np.dtype(dtype).type
    if up == 0.0 or float(sigma_next) == 0.0:
        return target
    gap = float(t(sigma) - t(sigma_next))
    eps = (anchor - target) / gap
    clean = anchor - float(sigma) * eps
    return alpha * (clean + down * eps) + up * noise


def standardized_noise(raw: mx.array) -> mx.array:
    """``raw`` (standard normal) shifted and scaled to mean 0 / std 1 over the whole tensor, then again per batch
    item over its last two axes (sample std, n-1), as the official loop prepares each injection."""
    x = raw.astype(mx.float32)
    x = (x - mx.mean(x)) / mx.sqrt(mx.var(x, ddof=1))
    axes = (-2, -1)
    return (x - mx.mean(x, axis=axes, keepdims=True)) / mx.sqrt(mx.var(x, axis=axes, keepdims=True, ddof=1))


# denoise(streams, sigma, stage) -> the x0 prediction per stream, clean tokens already blended in;
# stage is "step" (at sigma, the step's first evaluation) or "mid" (at the sub-sigma)
Denoise = Callable[[tuple[mx.array, ...], float, str], tuple[mx.array, ...]]
# noise(stage, stream index, shape) -> a standard normal draw; stage is "mid" or "step"
Noise = Callable[[str, int, tuple[int, ...]], mx.array]
# keep(stream index, x) -> x with the conditioning tokens put back clean (identity without a mask)
Keep = Callable[[int, mx.array], mx.array]


def res2s_step(xs: tuple[mx.array, ...], sigma: float, sigma_next: float, denoise: Denoise, noise: Noise,
               keep: Keep) -> tuple[mx.array, ...]:
    """One res_2s step of every stream from ``sigma`` to ``sigma_next`` (0: the x0 prediction at ``sigma``)."""
    if float(sigma_next) == 0.0:
        return tuple(x0.astype(x.dtype) for x0, x in zip(denoise(xs, float(sigma), "step"), xs))
    st = Res2sStep.between(sigma, sigma_next)
    anchors = [x.astype(mx.float32) for x in xs]
    d1 = [d.astype(mx.float32) for d in denoise(xs, st.sigma, "step")]
    c = st.h * st.a21
    mids, refined = [], []
    for i, (x, d) in enumerate(zip(anchors, d1)):
        mid = x + c * (d - x)
        mid = keep(i, sde_mix(x, mid, st.sigma, st.sub_sigma, standardized_noise(noise("mid", i, x.shape))))
        mids.append(mid)
        # the anchor whose deterministic midpoint is the noised one: x_a = x_mid - c*(d1 - x_a)
        refined.append((mid - c * d) / (1.0 - c) if st.refines_anchor else x)
    d2 = [d.astype(mx.float32) for d in denoise(tuple(m.astype(x.dtype) for m, x in zip(mids, xs)), st.sub_sigma,
                                                 "mid")]
    out = []
    for i, (xa, a, b) in enumerate(zip(refined, d1, d2)):
        nxt = xa + st.h * (st.b1 * (a - xa) + st.b2 * (b - xa))
        nxt = keep(i, sde_mix(xa, nxt, st.sigma, st.sigma_next, standardized_noise(noise("step", i, xa.shape)),
                              dtype=np.float32))
        out.append(nxt.astype(xs[i].dtype))
    return tuple(out)
