"""The shared sampling math: shape rules, seeded noise, Euler step, patchify, guidance plumbing."""

from __future__ import annotations

import subprocess
import sys

import mlx.core as mx
import numpy as np
import pytest

from ltx2.stages import sampling as s


@pytest.mark.parametrize("frames,fps,expected", [
    (121, 24.0, 126),  # 5.04 s -> 126.04 latent frames
    (121, 25.0, 121),
    (97, 24.0, 101),
    (9, 24.0, 9),  # 9.375
    (1, 50.0, 0),  # 0.5: Python's round goes to even, as the reference does
    (3, 50.0, 2),  # 1.5
    (257, 30.0, 214),  # 214.1666
])
def test_audio_latent_length_is_round_of_duration_times_25(frames, fps, expected):
    assert s.audio_latent_frames(frames, fps) == expected
    assert s.audio_latent_shape(frames, fps).shape == (1, 8, expected, 16)


def test_video_latent_shape_compresses_8_in_time_32_in_space():
    assert s.video_latent_shape(121, 512, 768).shape == (1, 128, 16, 16, 24)
    assert s.video_latent_shape(9, 64, 96, channels=8).shape == (1, 8, 2, 2, 3)


_NOISE_SNIPPET = """
import sys, numpy as np
from ltx2.stages.sampling import gaussian_noise, noise_key
x = np.array(gaussian_noise(noise_key(1234, "denoise", "video"), (2, 3, 5)))
sys.stdout.write(x.astype(np.float32).tobytes().hex())
"""


def _noise_in_subprocess() -> np.ndarray:
    out = subprocess.run([sys.executable, "-c", _NOISE_SNIPPET], check=True, capture_output=True, text=True).stdout
    return np.frombuffer(bytes.fromhex(out), np.float32).reshape(2, 3, 5)


def test_noise_stream_is_identical_across_processes_and_distinct_across_streams():
    a, b = _noise_in_subprocess(), _noise_in_subprocess()
    np.testing.assert_array_equal(a, b)
    here = np.array(s.gaussian_noise(s.noise_key(1234, "denoise", "video"), (2, 3, 5)))
    np.testing.assert_array_equal(a, here)
    for other in (s.noise_key(1234, "denoise", "audio"), s.noise_key(1235, "denoise", "video"),
                  s.noise_key(1234, "refine", "video"), s.noise_key(1234, "denoise", "video", 0)):
        c = np.array(s.gaussian_noise(other, (2, 3, 5)))
        assert not np.allclose(a, c)
    assert abs(float(here.mean())) < 1.0 and 0.3 < float(here.std()) < 2.0  # it is Gaussian-ish, not zeros


def test_noise_latent_follows_mask_and_scale():
    lat, noise = mx.ones((1, 4, 3)), mx.full((1, 4, 3), 5.0)
    mask = mx.array([[[1.0], [0.0], [1.0], [0.5]]])
    out = np.array(s.noise_latent(lat, noise, mask, noise_scale=0.5))
    np.testing.assert_allclose(out[0, :, 0], [3.0, 1.0, 3.0, 2.0])


def test_euler_step_to_sigma_zero_returns_x0():
    k1, k2 = mx.random.split(mx.random.key(0))
    x, x0 = mx.random.normal((2, 7, 5), key=k1), mx.random.normal((2, 7, 5), key=k2)
    np.testing.assert_allclose(np.array(s.euler_step(x, x0, 0.421875, 0.0)), np.array(x0), atol=2e-6)
    np.testing.assert_allclose(np.array(s.euler_step(x, x0, 1.0, 0.5)), np.array((x + x0) / 2), atol=2e-6)
    with pytest.raises(ValueError, match="sigma is 0"):
        s.euler_step(x, x0, 0.0, 0.0)


@pytest.mark.parametrize("patch", [1, 2])
def test_video_patchify_round_trip_and_token_order(patch):
    lat = mx.random.normal((2, 3, 4, 6, 8), key=mx.random.key(1))
    tok = s.patchify_video(lat, patch)
    assert tok.shape == (2, 4 * (6 // patch) * (8 // patch), 3 * patch * patch)
    np.testing.assert_array_equal(np.array(s.unpatchify_video(tok, 4, 6, 8, patch)), np.array(lat))
    t, ln = np.array(tok), np.array(lat)
    f, h, w, c = 2, 1, 3, 1  # token (f, h, w) in frame-major raster order; features (c, row, col)
    hp, wp = 6 // patch, 8 // patch
    np.testing.assert_array_equal(t[1, f * hp * wp + h * wp + w].reshape(3, patch, patch)[c],
                                  ln[1, c, f, h * patch:(h + 1) * patch, w * patch:(w + 1) * patch])


def test_audio_patchify_round_trip_and_feature_order():
    lat = mx.random.normal((1, 8, 5, 16), key=mx.random.key(2))
    tok = s.patchify_audio(lat)
    assert tok.shape == (1, 5, 128)
    np.testing.assert_array_equal(np.array(tok)[0, 3, 2 * 16 + 7], np.array(lat)[0, 2, 3, 7])
    np.testing.assert_array_equal(np.array(s.unpatchify_audio(tok, 8, 16)), np.array(lat))


def test_ltx2_schedule_ends_at_terminal_then_zero():
    sig = s.ltx2_sigmas(8)
    assert sig.shape == (9,) and sig[-1] == 0.0 and abs(sig[-2] - 0.1) < 1e-6 and abs(sig[0] - 1.0) < 1e-5
    assert np.all(np.diff(sig) < 0)
    with pytest.raises(ValueError, match="steps=0"):
        s.ltx2_sigmas(0)


def test_default_guidance_plans_four_passes_with_their_perturbations():
    passes = s.plan_passes(s.VIDEO_GUIDER_DEFAULTS, s.AUDIO_GUIDER_DEFAULTS)
    assert [p.kind for p in passes] == [s.PassKind.COND, s.PassKind.UNCOND, s.PassKind.PERTURBED, s.PassKind.ISOLATED]
    assert [p.negative_context for p in passes] == [False, True, False, False]
    assert passes[2].stg_video_blocks == (29,) and passes[2].stg_audio_blocks == (29,)
    assert passes[3].isolate_modalities and not passes[2].isolate_modalities
    assert s.plan_passes(s.NO_GUIDANCE, s.NO_GUIDANCE) == (s.GuidancePass(s.PassKind.COND),)


def test_guided_x0_is_the_same_batched_or_one_pass_at_a_time():
    keys = mx.random.split(mx.random.key(3), 8)
    out = {k: (mx.random.normal((1, 6, 4), key=keys[2 * i]), mx.random.normal((1, 5, 3), key=keys[2 * i + 1]))
           for i, k in enumerate(s.PassKind)}
    calls = []

    def run(passes):
        calls.append(len(passes))
        return (mx.concatenate([out[p.kind][0] for p in passes]), mx.concatenate([out[p.kind][1] for p in passes]))

    v1, a1 = s.guided_x0(run, s.VIDEO_GUIDER_DEFAULTS, s.AUDIO_GUIDER_DEFAULTS)
    v2, a2 = s.guided_x0(run, s.VIDEO_GUIDER_DEFAULTS, s.AUDIO_GUIDER_DEFAULTS, passes_per_call=1)
    assert calls == [4, 1, 1, 1, 1]
    np.testing.assert_allclose(np.array(v1), np.array(v2), rtol=1e-6)
    np.testing.assert_allclose(np.array(a1), np.array(a2), rtol=1e-6)
    ref = s.guide(s.AUDIO_GUIDER_DEFAULTS, *(out[k][1] for k in s.PassKind))
    np.testing.assert_allclose(np.array(a1), np.array(ref), rtol=1e-6)
    assert not np.allclose(np.array(a1), np.array(out[s.PassKind.COND][1]))  # guidance changed something


def test_negative_context_is_required_when_a_pass_needs_it():
    passes = s.plan_passes(s.VIDEO_GUIDER_DEFAULTS, s.AUDIO_GUIDER_DEFAULTS)
    pos = mx.zeros((1, 3, 2))
    with pytest.raises(ValueError, match="negative prompt"):
        s.pass_contexts(passes, pos, None)
    assert s.pass_contexts(passes, pos, mx.ones((1, 3, 2))).shape == (4, 3, 2)


def test_resume_on_a_skip_step_computes_that_step():
    """A run resumed on a step that skip_step would skip has no previous x0: it must compute, not fail."""
    from ltx2.stages.denoising import Conditioning, Sampler, TokenState
    from ltx2.stages.sampling import GuiderParams

    class HalvingModel:  # stands in for the transformer: x0 = latent / 2
        calls = 0

        def positional_tables(self, video_positions, audio_positions):
            return None

        def denoise(self, video, audio, perturbations, tables):
            HalvingModel.calls += 1
            return video.latent * 0.5, audio.latent * 0.5

    cond = Conditioning(video_context=mx.zeros((1, 4, 8)), audio_context=mx.zeros((1, 4, 8)),
                        video_positions=np.zeros((1, 3, 6, 2), np.float32),
                        audio_positions=np.zeros((1, 1, 3, 2), np.float32))
    g = GuiderParams(skip_step=1)  # steps 1, 3, ... reuse the previous x0
    state = TokenState(mx.ones((1, 6, 4)), mx.ones((1, 3, 4)))
    out = Sampler(HalvingModel(), cond, (g, g)).run(state, [1.0, 0.75, 0.5, 0.0], start=1)
    assert HalvingModel.calls == 2  # step 1 computed (nothing to reuse), step 2 computed as usual
    assert np.isfinite(np.array(out.video)).all()
