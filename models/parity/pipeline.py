"""Parity of the whole two-stage sampling chain against the official pipeline (pipeline_two_stage_tiny).

Guided stage 1 (3 LTX2Scheduler steps, CFG + STG(block 1) + modality guidance + rescale) -> x2 latent
upsample -> distilled stage 2 (re-noise to .909375, 3 steps) -> (optionally) VAE decode. Each stage
consumes OUR previous output, so errors accumulate as in a real run; the reference's saved noise
tensors replace our seeded noise (torch's generator cannot be reproduced).

Weights: the self-contained committed fixture carries them in ``<name>.safetensors`` (transformer +
VAE statistics) and ``<name>_upsampler.safetensors``; the oracle's stock set has them in the
component fixtures the oracle names (transformer_ltx2, video_vae, upsampler_x2, seeds 10/100/400).
"""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import numpy as np

from . import PIPELINE_TOL, SCHEDULE_TOL, ParityResult, compare, load_fixture


def _files(directory: Path, name: str) -> tuple[Path, Path, Path | None]:
    own = directory / f"{name}.safetensors"
    if own.exists():
        return own, directory / f"{name}_upsampler.safetensors", None
    vae = directory / "video_vae.safetensors"
    return directory / "transformer_ltx2.safetensors", directory / "upsampler_x2.safetensors", vae


def check_pipeline(directory: Path, name: str) -> list[ParityResult]:
    from ltx2.models.transformer import load_transformer
    from ltx2.models.upsampler import load_latent_statistics, load_upsampler, upsample_latent
    from ltx2.stages.denoising import Conditioning, Sampler, TokenState
    from ltx2.stages.sampling import (GuiderParams, audio_positions, ltx2_sigmas, noise_latent, patchify_audio,
                                      patchify_video, unpatchify_audio, unpatchify_video, video_positions)

    z = load_fixture(directory, name)
    ckpt, up_path, vae_path = _files(directory, name)
    model = load_transformer(ckpt)
    stats = load_latent_statistics(ckpt if vae_path is None else vae_path)
    upsampler = load_upsampler(up_path)
    res: list[ParityResult] = [compare(name, "stage1_sigmas (LTX2Scheduler, 3 steps)", ltx2_sigmas(3),
                                       z["stage1_sigmas"], SCHEDULE_TOL)]
    fps, frames = 24.0, 9
    a_frames = z["stage1_out_audio_latent"].shape[2]
    m = lambda k: mx.array(z[k])  # noqa: E731

    def sample(lat_f, lat_h, lat_w, v_tokens, a_tokens, sigmas, guidance):
        cond = Conditioning(video_context=m("ctx_video_pos"), audio_context=m("ctx_audio_pos"),
                            negative_video_context=m("ctx_video_neg"), negative_audio_context=m("ctx_audio_neg"),
                            video_positions=np.array(video_positions(lat_f, lat_h, lat_w, fps)),
                            audio_positions=np.array(audio_positions(a_frames)))
        return Sampler(model, cond, guidance).run(TokenState(v_tokens, a_tokens), [float(s) for s in sigmas])

    # stage 1: from pure noise (noise * mask * 1 + 0)
    c, f, h, w = z["stage1_out_video_latent"].shape[1:]
    mel = z["stage1_out_audio_latent"].shape[3]
    guidance = (GuiderParams(3.0, 1.0, (1,), 0.7, 3.0), GuiderParams(7.0, 1.0, (1,), 0.7, 3.0))
    zeros_v = mx.zeros((1, f * h * w, c))
    zeros_a = mx.zeros((1, a_frames, c * mel))
    s1 = sample(f, h, w, noise_latent(zeros_v, m("stage1_noise_video_tokens")),
                noise_latent(zeros_a, m("stage1_noise_audio_tokens")), z["stage1_sigmas"], guidance)
    v1 = unpatchify_video(s1.video, f, h, w)
    a1 = unpatchify_audio(s1.audio, c, mel)
    res.append(compare(name, "stage1_out_video_latent", v1, z["stage1_out_video_latent"], PIPELINE_TOL))
    res.append(compare(name, "stage1_out_audio_latent", a1, z["stage1_out_audio_latent"], PIPELINE_TOL))

    # x2 upsample (un-normalise, upsample, re-normalise)
    up = upsample_latent(v1, upsampler, stats)
    res.append(compare(name, "upsampled_video_latent", up, z["upsampled_video_latent"], PIPELINE_TOL))

    # stage 2: re-noise our upsampled latent and our stage-1 audio to the first distilled sigma
    sig2 = [float(s) for s in z["stage2_sigmas"]]
    _, _, f2, h2, w2 = up.shape
    s2 = sample(f2, h2, w2, noise_latent(patchify_video(up), m("stage2_noise_video_tokens"), 1.0, sig2[0]),
                noise_latent(patchify_audio(a1), m("stage2_noise_audio_tokens"), 1.0, sig2[0]), sig2, None)
    v2 = unpatchify_video(s2.video, f2, h2, w2)
    res.append(compare(name, "stage2_out_video_latent", v2, z["stage2_out_video_latent"], PIPELINE_TOL))
    res.append(compare(name, "stage2_out_audio_latent", unpatchify_audio(s2.audio, c, mel),
                       z["stage2_out_audio_latent"], PIPELINE_TOL))

    if vae_path is not None and "decoded_video" in z and vae_path.exists():
        from ltx2.models.video_vae import load_video_decoder

        dec = load_video_decoder(vae_path)
        if not getattr(dec.config, "timestep_conditioning", False):  # noise-free decoder: comparable
            res.append(compare(name, "decoded_video", dec(v2), z["decoded_video"], PIPELINE_TOL))
    return res
