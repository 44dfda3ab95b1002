"""The conditioning items on token states, by hand-derived values (the v1.2.0 fixtures check them against the official
code in tests/models/test_parity_v12.py; these hold without ../shared)."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from ltx2.stages.sampling import conditioning as items


def _latent(f, h, w, c=4, seed=0):
    return mx.array(np.random.default_rng(seed).standard_normal((1, c, f, h, w)).astype(np.float32))


def test_replace_sets_the_clean_tokens_and_mask_of_one_latent_frame() -> None:
    s = items.video_tokens((3, 2, 3), 4, 24.0)
    img = _latent(1, 2, 3)
    out = items.replace_frame(s, img, 1, 0.6)
    clean = np.asarray(out.clean)
    np.testing.assert_array_equal(clean[0, 6:12], np.asarray(img)[0, :, 0].reshape(4, 6).T)
    assert not clean[0, :6].any() and not clean[0, 12:].any()
    np.testing.assert_allclose(out.mask[0], [1] * 6 + [0.4] * 6 + [1] * 6, rtol=0, atol=1e-7)
    assert out.tokens == out.target_tokens == 18
    with pytest.raises(ValueError, match="runs past"):
        items.replace_frame(s, img, 3, 1.0)


def test_keyframe_tokens_are_appended_at_their_frame_for_one_pixel_frame() -> None:
    s = items.video_tokens((3, 2, 3), 4, 24.0)
    kf = _latent(1, 2, 3, seed=1)
    out = items.append(s, kf, items.keyframe_positions(kf.shape, 16, 24.0), 1.0)
    assert out.tokens == 24 and out.target_tokens == 18
    assert not np.asarray(out.latent)[0, 18:].any()  # placeholder zeros; the clean latent holds the image
    np.testing.assert_array_equal(np.asarray(out.clean)[0, 18:], np.asarray(kf)[0, :, 0].reshape(4, 6).T)
    np.testing.assert_array_equal(out.mask[0, 18:], 0.0)
    t = out.positions[0, 0, 18:]
    np.testing.assert_allclose(t, np.tile([16 / 24, 17 / 24], (6, 1)), atol=1e-7)
    # space: pixel bounds of the latent cells (32 px each)
    np.testing.assert_array_equal(out.positions[0, 1, 18:21], [[0, 32], [0, 32], [0, 32]])
    np.testing.assert_array_equal(out.positions[0, 2, 18:21], [[0, 32], [32, 64], [64, 96]])
    assert out.attention is None
    # at frame 0 the causal fix applies: the first latent frame is pixel frame 0 alone
    out0 = items.append(s, kf, items.keyframe_positions(kf.shape, 0, 24.0), 1.0)
    np.testing.assert_allclose(out0.positions[0, 0, 18:], np.tile([0, 1 / 24], (6, 1)), atol=1e-7)


def test_reference_positions_are_scaled_to_the_target_and_groups_do_not_see_each_other() -> None:
    s = items.video_tokens((2, 2, 2), 4, 24.0)  # 8 target tokens
    ref = _latent(2, 1, 1, seed=2)  # 2 reference tokens
    pos = items.reference_positions(ref.shape, 24.0, 2)
    np.testing.assert_array_equal(pos[0, 1, :, :], [[0, 64], [0, 64]])  # 32 px cells x 2
    np.testing.assert_allclose(pos[0, 0], [[0, 1 / 24], [1 / 24, 9 / 24]], atol=1e-7)
    a = items.append(s, ref, pos, 1.0, attention=np.array([[0.0, 0.5]], np.float32))
    att = a.attention[0]
    assert att.shape == (10, 10)
    np.testing.assert_array_equal(att[:8, :8], 1.0)
    np.testing.assert_array_equal(att[8:, 8:], 1.0)
    np.testing.assert_array_equal(att[:8, 8], 0.0)
    np.testing.assert_array_equal(att[:8, 9], 0.5)
    np.testing.assert_array_equal(att[9, :8], 0.5)
    # a second group (no mask of its own): full with the target, nothing with the first group
    b = items.append(a, ref, pos, 1.0)
    att = b.attention[0]
    assert att.shape == (12, 12)
    np.testing.assert_array_equal(att[:8, 10:], 1.0)
    np.testing.assert_array_equal(att[8:10, 10:], 0.0)
    np.testing.assert_array_equal(att[10:, 8:10], 0.0)
    np.testing.assert_array_equal(att[:10, :10], a.attention[0])


def test_retake_window_marks_the_tokens_whose_span_meets_it() -> None:
    # 25 frames at 24 fps: latent frame spans (causal) [0,1), [1,9), [9,17), [17,25) frames
    s = items.video_tokens((4, 1, 1), 4, 24.0)
    w = items.video_window(s, 0.4, 0.65)  # 9.6 .. 15.6 frames: only latent frame 2
    np.testing.assert_array_equal(w.mask[0], [0, 0, 1, 0])
    w = items.video_window(s, 9 / 24, 9 / 24 + 1e-3)  # starts exactly where frame 2 starts: frame 1 ends there
    np.testing.assert_array_equal(w.mask[0], [0, 0, 1, 0])
    a = items.audio_tokens(26, 2, 4)  # each audio latent frame: 4 mel hops of 10 ms (causal start)
    wa = items.audio_window(a, 0.4, 0.65)
    assert list(np.nonzero(wa.mask[0])[0]) == list(range(10, 17))


def test_noise_keeps_mask_zero_tokens_exactly_and_frozen_streams() -> None:
    init = _latent(2, 1, 2, seed=3)
    s = items.video_tokens((2, 1, 2), 4, 24.0, initial=init)
    s = items.video_window(s, 0.0, 0.01)  # latent frame 0 regenerated, frame 1 kept
    noise = mx.array(np.random.default_rng(4).standard_normal((1, 4, 4)).astype(np.float32))
    n = items.noised(s, noise, 1.0)
    tok = np.asarray(s.clean)
    np.testing.assert_array_equal(np.asarray(n.latent)[0, 2:], tok[0, 2:])
    np.testing.assert_array_equal(np.asarray(n.latent)[0, :2], np.asarray(noise)[0, :2])
    half = items.noised(s, noise, 0.25)
    np.testing.assert_allclose(np.asarray(half.latent)[0, :2], 0.75 * tok[0, :2] + 0.25 * np.asarray(noise)[0, :2],
                               rtol=1e-6, atol=1e-6)
    f = items.frozen(s)
    assert f.frozen and not f.mask.any()
    assert items.latent_index_of(16) == 2 and items.latent_index_of(0) == 0
    with pytest.raises(ValueError, match="multiple of 8"):
        items.latent_index_of(12)
