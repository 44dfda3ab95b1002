"""The res_2s sampler in the denoising loop: its schedule, coefficients, noise, and per-step resume."""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np
import pytest

from ltx2.stages.denoising import Conditioning, Sampler, TokenState, step_noise
from ltx2.stages.sampling import GuiderParams, ltx2_sigmas
from ltx2.stages.sampling.res2s import (TERMINAL_SIGMA, Res2sStep, phi, res2s_schedule, sde_coefficients,
                                        standardized_noise)


class TanhModel:
    """Stands in for the transformer: x0 = tanh(x @ W + sigma * b) per stream, fixed W and b (a real nonlinearity,
    so a wrong state fed to a step changes the result)."""

    def __init__(self, c_video: int = 4, c_audio: int = 4):
        rng = np.random.default_rng(3)
        self.w = [mx.array(rng.standard_normal((c, c)).astype(np.float32) / 2) for c in (c_video, c_audio)]
        self.b = [mx.array(rng.standard_normal((c,)).astype(np.float32)) for c in (c_video, c_audio)]
        self.calls = 0

    def positional_tables(self, video_positions, audio_positions):
        return None

    def denoise(self, video, audio, perturbations, tables):
        self.calls += 1
        out = []
        for i, m in enumerate((video, audio)):
            ctx = mx.mean(m.context, axis=(1, 2), keepdims=True)  # the prompt matters (CFG differs from cond)
            out.append(mx.tanh(m.latent @ self.w[i] + m.sigma * self.b[i] + ctx))
        return out[0], out[1]


def _cond(masked: bool = False) -> Conditioning:
    rng = np.random.default_rng(5)
    vm = mx.array((np.arange(6) >= 2).astype(np.float32)[None]) if masked else None
    return Conditioning(video_context=mx.ones((1, 4, 8)), audio_context=mx.ones((1, 4, 8)) * 0.5,
                        video_positions=np.zeros((1, 3, 6, 2), np.float32),
                        audio_positions=np.zeros((1, 1, 3, 2), np.float32),
                        negative_video_context=mx.zeros((1, 4, 8)), negative_audio_context=mx.zeros((1, 4, 8)),
                        video_mask=vm, video_clean=mx.array(rng.standard_normal((1, 6, 4)).astype(np.float32))
                        if masked else None)


def _initial() -> TokenState:
    rng = np.random.default_rng(9)
    return TokenState(mx.array(rng.standard_normal((1, 6, 4)).astype(np.float32)),
                      mx.array(rng.standard_normal((1, 3, 4)).astype(np.float32)))


def test_schedule_ends_through_the_terminal_sigma():
    assert res2s_schedule([0.909375, 0.725, 0.421875, 0.0]) == pytest.approx([0.909375, 0.725, 0.421875,
                                                                              TERMINAL_SIGMA, 0.0])
    assert res2s_schedule([1.0, 0.5]) == [1.0, 0.5]  # no final 0: nothing added


def test_coefficients_are_the_exponential_midpoint_rule():
    st = Res2sStep.between(0.8, 0.4)
    h = math.log(2.0)
    assert st.h == pytest.approx(h) and st.sub_sigma == pytest.approx(math.sqrt(0.32))
    assert st.a21 == pytest.approx(0.5 * (1 - math.exp(-h / 2)) / (h / 2))
    assert st.b1 + st.b2 == pytest.approx(phi(1, -h))  # consistency: the weights sum to phi1
    tiny = Res2sStep.between(0.5, 0.5 * (1 - 1e-7))  # h -> 0: the explicit midpoint rule
    assert (tiny.a21, tiny.b1, tiny.b2) == pytest.approx((0.5, 0.0, 1.0), abs=1e-6)
    assert Res2sStep.between(0.8, 0.6).refines_anchor and not st.refines_anchor  # h = log 2 > 0.5
    assert not Res2sStep.between(0.02, 0.019).refines_anchor  # sigma below 0.03
    with pytest.raises(ValueError):
        Res2sStep.between(0.4, 0.0)


def test_sde_coefficients_keep_the_variance_of_sigma_next():
    alpha, down, up = sde_coefficients(0.6)
    assert up == pytest.approx(0.3)
    # the deterministic part carries alpha*down of noise, the injection up: together sigma_next's variance
    assert (alpha * down) ** 2 + up ** 2 == pytest.approx(0.36)


def test_noise_is_standardized_per_batch_item():
    raw = mx.random.normal((2, 50, 7), key=mx.random.key(1)) * 3 + 1
    n = np.array(standardized_noise(raw))
    assert np.allclose(n.mean(axis=(1, 2)), 0, atol=1e-5) and np.allclose(n.std(axis=(1, 2), ddof=1), 1, atol=1e-5)


def test_sampler_refuses_unknown_names_and_res2s_without_noise():
    with pytest.raises(ValueError, match="sampler"):
        Sampler(TanhModel(), _cond(), sampler="heun")
    with pytest.raises(ValueError, match="noise"):
        Sampler(TanhModel(), _cond(), sampler="res_2s")


def test_step_noise_streams_differ_by_step_stage_and_place():
    a = step_noise(1, "denoise")
    draws = [np.array(a(*k, (1, 6, 4))) for k in [(0, "mid", "video"), (1, "mid", "video"), (0, "step", "video"),
                                                   (0, "mid", "audio")]]
    draws.append(np.array(step_noise(1, "refine")(0, "mid", "video", (1, 6, 4))))
    assert all(not np.array_equal(draws[0], d) for d in draws[1:])
    assert np.array_equal(draws[0], np.array(step_noise(1, "denoise")(0, "mid", "video", (1, 6, 4))))


@pytest.mark.parametrize("guided,masked", [(False, False), (True, True), (True, False)])
def test_res2s_resumed_from_any_step_checkpoint_is_bit_identical(guided, masked):
    """The loop checkpoints the state after every step: resuming from step k's state reproduces the
    uninterrupted run exactly (res_2s keeps nothing else between steps; its noise is keyed by the step)."""
    sigmas = res2s_schedule(ltx2_sigmas(5).tolist())
    g = (GuiderParams(cfg_scale=3.0, stg_scale=0.0, rescale_scale=0.45, modality_scale=1.0),
         GuiderParams(cfg_scale=7.0, stg_scale=0.0, rescale_scale=1.0, modality_scale=1.0)) if guided else None

    def sampler(model):
        return Sampler(model, _cond(masked), g, passes_per_call=1, sampler="res_2s", noise=step_noise(7, "denoise"))

    states: dict[int, TokenState] = {}
    model = TanhModel()
    full = sampler(model).run(_initial(), sigmas, 0, lambda k, st: states.__setitem__(k, st))
    n = len(sigmas) - 1
    assert sorted(states) == list(range(1, n + 1))
    # 2 evaluations per RK step, 1 at the end; 2 passes each (cond, uncond) when guided
    assert model.calls == (2 * (n - 1) + 1) * (2 if guided else 1)
    for k in range(1, n):
        # the checkpoint round trip: the stage writes the state as float32 arrays and reads them back
        saved = TokenState(mx.array(np.array(states[k].video)), mx.array(np.array(states[k].audio)))
        resumed = sampler(TanhModel()).run(saved, sigmas, k)
        assert np.array_equal(np.array(resumed.video), np.array(full.video)), f"resumed at step {k}"
        assert np.array_equal(np.array(resumed.audio), np.array(full.audio)), f"resumed at step {k}"
    if masked:  # conditioning tokens stay clean through the noise injections
        assert np.array_equal(np.array(full.video)[:, :2], np.array(_cond(True).video_clean)[:, :2])


def test_res2s_differs_from_euler_and_from_another_seed():
    sigmas = ltx2_sigmas(4).tolist()
    euler = Sampler(TanhModel(), _cond()).run(_initial(), sigmas)
    r = [Sampler(TanhModel(), _cond(), sampler="res_2s", noise=step_noise(s, "denoise")).run(
        _initial(), res2s_schedule(sigmas)) for s in (1, 2)]
    assert not np.allclose(np.array(euler.video), np.array(r[0].video))
    assert not np.array_equal(np.array(r[0].video), np.array(r[1].video))
