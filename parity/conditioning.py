"""Parity of the conditioning workflows with the official v1.2.0 pipelines (fixtures ``cond_*``).

Each case is replayed with this port's own pieces: the conditioning items (stages/sampling/conditioning.py)
build each stage's state from the fixture's encoded latents, the recorded noise replaces our seeded draws
(torch's generator cannot be reproduced), and the stage's sampler (stages/denoising.py: the transformer,
guidance, the clean-token blend and the Euler step) runs the recorded sigmas. Stage 2 starts from OUR
upsampled stage-1 output and OUR stage-1 audio, so errors accumulate as in a real run.

Compared (tolerances from the oracle's README-v12): the initial states (latent, clean latent, denoise mask,
positions, attention mask) at 1e-5 / 1e-6 abs; the step-0 x0 after guidance, the state after step 1, the final
tokens and each stage's output at 1e-4 relative; and the exact invariants (frozen audio, retake's kept frames,
the i2v frame, appended tokens) bit for bit. The rows of parity/conditioning_media.py come first: the media
preprocessing (pixels, mask weights, mels) and the encoders (pixels -> latents).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np

from ltx2.models.transformer import load_transformer
from ltx2.models.upsampler import load_latent_statistics, load_upsampler, upsample_latent
from ltx2.stages.denoising import Conditioning, Sampler, TokenState
from ltx2.stages.sampling import GuiderParams, unpatchify_audio, unpatchify_video
from ltx2.stages.sampling import conditioning as items
from ltx2.stages.sampling.conditioning import TokenLatents

from . import NETWORK_TOL, ParityResult, compare, load_fixture
from .conditioning_media import check_cond_encoders

STATE_TOL = 1e-5  # the initial states: two lerps
POSITION_ATOL = 1e-6
FPS = 24.0
GUIDED = (GuiderParams(3.0, 1.0, (1,), 0.7, 3.0), GuiderParams(7.0, 1.0, (1,), 0.7, 3.0))
A2V_GUIDED = (GuiderParams(3.0, 1.0, (1,), 0.7, 3.0), GuiderParams())  # the audio guider at its defaults: off


@dataclass
class Case:
    name: str
    z: dict[str, np.ndarray]
    directory: Path
    results: list[ParityResult]

    def m(self, key: str) -> mx.array:
        return mx.array(self.z[key])

    def close(self, key: str, ours, tol: float = NETWORK_TOL) -> None:
        self.results.append(compare(self.name, key, np.asarray(ours), self.z[key], tol))

    def abs_close(self, key: str, ours, atol: float) -> None:
        ref = self.z[key]
        ours = np.asarray(ours, dtype=np.float32).reshape(ref.shape)
        err = float(np.max(np.abs(ours - ref))) if ref.size else 0.0
        self.results.append(ParityResult(self.name, f"{key} (max abs)", err, atol, "pass" if err <= atol else "FAIL"))

    def exact(self, label: str, ours, ref) -> None:
        ours, ref = np.asarray(ours), np.asarray(ref)
        same = ours.shape == ref.shape and np.array_equal(ours, ref)
        err = 0.0 if same else (float(np.max(np.abs(ours - ref))) if ours.shape == ref.shape else None)
        self.results.append(ParityResult(self.name, f"{label} (exact)", err, 0.0, "pass" if same else "FAIL",
                                         "" if same or err is not None else f"shapes {ours.shape} vs {ref.shape}"))


def _model(directory: Path, name: str, loras=()):
    ckpt = directory / ("cond_ltx2_model.safetensors" if name.endswith("_ltx2") else "cond_ltx23_model.safetensors")
    return ckpt, load_transformer(ckpt, loras=list(loras))


def _check_init(c: Case, k: int, video: TokenLatents, audio: TokenLatents, noised: TokenState) -> None:
    p = f"s{k}_init_"
    c.close(p + "video_latent", noised.video, STATE_TOL)
    c.close(p + "video_clean_latent", video.clean, STATE_TOL)
    c.abs_close(p + "video_denoise_mask", video.mask, 0.0)
    c.abs_close(p + "video_positions", video.positions, POSITION_ATOL)
    if p + "video_attention_mask" in c.z:
        c.abs_close(p + "video_attention_mask", video.attention, 1e-6)
    c.close(p + "audio_latent", noised.audio, STATE_TOL)
    c.close(p + "audio_clean_latent", audio.clean, STATE_TOL)
    c.abs_close(p + "audio_denoise_mask", audio.mask, 0.0)
    c.abs_close(p + "audio_positions", audio.positions, POSITION_ATOL)


def _stage(c: Case, k: int, model, video: TokenLatents, audio: TokenLatents, video_scale: float,
           audio_scale: float, guidance, grid: tuple[int, int, int], audio_shape: tuple[int, int]):
    """Noise both states with the recorded draws, check them, sample the stage's recorded sigmas; returns the
    stage outputs (video (1, C, F, H, W), audio (1, C, T, M))."""
    z = c.z
    sigmas = [float(s) for s in z[f"s{k}_sigmas"]]
    v = items.noised(video, c.m(f"s{k}_noise_video"), video_scale)
    a = items.noised(audio, c.m(f"s{k}_noise_audio"), audio_scale)
    state = TokenState(v.latent, a.latent)
    _check_init(c, k, video, audio, state)
    neg = "ctx_video_neg" in z and guidance is not None
    cond = Conditioning(video_context=c.m("ctx_video_pos"), audio_context=c.m("ctx_audio_pos"),
                        video_positions=None, audio_positions=None,
                        negative_video_context=c.m("ctx_video_neg") if neg else None,
                        # a frozen soundtrack's guider has no negative prompt (A2VidPipelineTwoStage)
                        negative_audio_context=c.m("ctx_audio_neg") if neg and not audio.frozen else None,
                        ).with_states(v, a)
    sampler = Sampler(model, cond, guidance)
    v0, a0 = sampler.x0(state, sigmas[0], 0)
    c.close(f"s{k}_step0_denoised_video", v0)
    c.close(f"s{k}_step0_denoised_audio", a0)
    after: dict[int, TokenState] = {}
    final = sampler.run(state, sigmas, on_step=lambda i, s: after.setdefault(i, s))
    c.close(f"s{k}_after_step1_video_latent", after[1].video)
    c.close(f"s{k}_after_step1_audio_latent", after[1].audio)
    c.close(f"s{k}_final_video_tokens", final.video)
    c.close(f"s{k}_final_audio_tokens", final.audio)
    if video.tokens > video.target_tokens:  # appended tokens with mask 0 stay their clean latent exactly
        kept = video.mask[0, video.target_tokens:] == 0
        c.exact(f"s{k} appended tokens = clean", np.asarray(final.video)[:, video.target_tokens:][:, kept],
                np.asarray(video.clean)[:, video.target_tokens:][:, kept])
    f, h, w = grid
    out_v = unpatchify_video(video.target(final.video), f, h, w)
    out_a = unpatchify_audio(final.audio, *audio_shape)
    c.close(f"s{k}_out_video_latent", out_v)
    c.close(f"s{k}_out_audio_latent", out_a)
    return out_v, out_a


def _grid(z, key: str) -> tuple[int, int, int]:
    return tuple(int(d) for d in z[key].shape[2:])


def _audio_shape(z, key: str) -> tuple[int, int]:
    return int(z[key].shape[1]), int(z[key].shape[3])


def _upsample(c: Case, ckpt: Path, out_v: mx.array) -> mx.array:
    up = upsample_latent(out_v, load_upsampler(c.directory / "cond_upsampler_x2.safetensors"),
                         load_latent_statistics(ckpt))
    c.close("upsampled_video_latent", up)
    return up


def _images(c: Case, k: int, video: TokenLatents, keyframe_all: bool) -> TokenLatents:
    """The images of stage k as the pipeline applies them: combined (frame 0 replaces latent frame 0, the others
    are appended keyframes) or, for keyframe interpolation, every one appended."""
    frames = {0: 0, 1: 16}
    j = 0
    while f"s{k}_image{j}_latent" in c.z:
        lat = c.m(f"s{k}_image{j}_latent")
        frame = frames[j]
        if frame == 0 and not keyframe_all:
            video = items.replace_frame(video, lat, 0, 1.0)
        else:
            video = items.append(video, lat, items.keyframe_positions(lat.shape, frame, FPS), 1.0)
        j += 1
    return video


def _i2v(c: Case, keyframe_all: bool, guided: bool, two_stage: bool, latent_index: int | None = None,
         strength: float = 1.0) -> None:
    z = c.z
    ckpt, model = _model(c.directory, c.name)
    grid1, ash = _grid(z, "s1_out_video_latent"), _audio_shape(z, "s1_out_audio_latent")
    video = items.video_tokens(grid1, z["s1_out_video_latent"].shape[1], FPS)
    if latent_index is None:
        video = _images(c, 1, video, keyframe_all)
    else:
        video = items.replace_frame(video, c.m("s1_image0_latent"), latent_index, strength)
    audio = items.audio_tokens(z["s1_out_audio_latent"].shape[2], *ash)
    out_v, out_a = _stage(c, 1, model, video, audio, 1.0, 1.0, GUIDED if guided else None, grid1, ash)
    if not keyframe_all and latent_index is None:
        c.exact("s1 out frame 0 = image latent", np.asarray(out_v)[:, :, :1], z["s1_image0_latent"])
    if not two_stage:
        return
    up = _upsample(c, ckpt, out_v)
    grid2 = tuple(int(d) for d in up.shape[2:])
    sig0 = float(z["s2_sigmas"][0])
    video2 = _images(c, 2, items.video_tokens(grid2, up.shape[1], FPS, initial=up), keyframe_all)
    audio2 = items.audio_tokens(out_a.shape[2], *ash, initial=out_a)
    out_v2, _ = _stage(c, 2, model, video2, audio2, sig0, sig0, None, grid2, ash)
    if not keyframe_all:
        c.exact("s2 out frame 0 = image latent", np.asarray(out_v2)[:, :, :1], z["s2_image0_latent"])


def _ic_lora(c: Case) -> None:
    z = c.z
    ckpt, model = _model(c.directory, c.name, [(c.directory / "cond_ic_lora.safetensors", 0.75)])
    c.close("s1_lora_fused_block0_attn1_to_q_weight", model.transformer_blocks[0].attn1.to_q.weight)
    grid, ash = _grid(z, "s1_out_video_latent"), _audio_shape(z, "s1_out_audio_latent")
    video = items.video_tokens(grid, z["s1_out_video_latent"].shape[1], FPS)
    ref = c.m("ref_video_latent")
    weights = z["ref_latent_attention_weights"]  # area means x conditioning_attention_strength 0.8
    video = items.append(video, ref, items.reference_positions(ref.shape, FPS, 2), 1.0, attention=weights)
    audio = items.audio_tokens(z["s1_out_audio_latent"].shape[2], *ash)
    _stage(c, 1, model, video, audio, 1.0, 1.0, None, grid, ash)


def _a2v(c: Case) -> None:
    z = c.z
    ckpt, model = _model(c.directory, c.name)
    grid1, ash = _grid(z, "s1_out_video_latent"), _audio_shape(z, "s1_out_audio_latent")
    enc = c.m("audio_latent_conditioning")
    c.exact("audio_latent_conditioning = encoded[:18]", z["audio_latent_encoded"][:, :, :enc.shape[2]], enc)
    audio = items.frozen(items.audio_tokens(enc.shape[2], *ash, initial=enc))
    video = items.video_tokens(grid1, z["s1_out_video_latent"].shape[1], FPS)
    out_v, out_a = _stage(c, 1, model, video, audio, 1.0, 0.0, A2V_GUIDED, grid1, ash)
    c.exact("s1 out audio = conditioning", out_a, enc)
    up = _upsample(c, ckpt, out_v)
    grid2 = tuple(int(d) for d in up.shape[2:])
    sig0 = float(z["s2_sigmas"][0])
    video2 = items.video_tokens(grid2, up.shape[1], FPS, initial=up)
    _, out_a2 = _stage(c, 2, model, video2, audio, sig0, 0.0, None, grid2, ash)
    c.exact("s2 out audio = conditioning", out_a2, enc)


def _retake(c: Case) -> None:
    z = c.z
    ckpt, model = _model(c.directory, c.name)
    src_v, src_a = c.m("source_video_latent"), c.m("source_audio_latent")
    grid, ash = tuple(int(d) for d in src_v.shape[2:]), _audio_shape(z, "source_audio_latent")
    start, end = 0.4, 0.65
    video = items.video_window(items.video_tokens(grid, src_v.shape[1], FPS, initial=src_v), start, end)
    audio = items.audio_window(items.audio_tokens(src_a.shape[2], *ash, initial=src_a), start, end)
    out_v, out_a = _stage(c, 1, model, video, audio, 1.0, 1.0, None, grid, ash)
    keep_v = [i for i in range(grid[0]) if i != 2]
    c.exact("s1 out video outside the window = source", np.asarray(out_v)[:, :, keep_v], z["source_video_latent"][:, :, keep_v])
    keep_a = [i for i in range(src_a.shape[2]) if not 10 <= i <= 16]
    c.exact("s1 out audio outside the window = source", np.asarray(out_a)[:, :, keep_a],
            z["source_audio_latent"][:, :, keep_a])


WORKFLOWS: dict[str, Callable[[Case], None]] = {
    "cond_i2v_distilled_ltx23": lambda c: _i2v(c, keyframe_all=False, guided=False, two_stage=True),
    "cond_i2v_distilled_ltx2": lambda c: _i2v(c, keyframe_all=False, guided=False, two_stage=False),
    "cond_i2v_latent_index_ltx23": lambda c: _i2v(c, keyframe_all=False, guided=True, two_stage=False,
                                                  latent_index=1, strength=0.6),
    "cond_keyframes_ltx23": lambda c: _i2v(c, keyframe_all=True, guided=True, two_stage=True),
    "cond_ic_lora_ltx23": _ic_lora,
    "cond_a2v_ltx23": _a2v,
    "cond_retake_ltx23": _retake,
}


def check_conditioning(directory: Path, name: str) -> list[ParityResult]:
    """The media and encoder rows (parity/conditioning_media.py), then the workflow replayed stage by stage."""
    c = Case(name, load_fixture(directory, name), Path(directory), check_cond_encoders(directory, name))
    WORKFLOWS[name](c)
    return c.results
