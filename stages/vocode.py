"""vocode: latents.zarr -> audio.zarr (audio VAE decoder to log-mel, then the vocoder to a waveform)."""

from __future__ import annotations

import mlx.core as mx

from .base import StageContext, StageSpec
from .contract import MemoryPlan
from .memory import COMPUTE_BYTES, weight_bytes

SPEC = StageSpec("vocode", inputs=("latents",), output_kind="audio", weights=("checkpoint",),
                 budget_fix="raise memory_budget")


def resolve_params(_inputs, p: dict) -> dict:
    return dict(p)


def estimate(ctx: StageContext) -> MemoryPlan:
    ckpt = ctx.weights["checkpoint"]
    w = weight_bytes(ckpt, ("audio_vae.decoder.", "audio_vae.per_channel_statistics.", "vocoder."))
    t = ctx.inputs["latents"].shape("audio")[2]
    # mel frames = 4 x latent frames; the vocoder's widest activations: 240 samples per mel frame x ~32 channels
    samples = 4 * t * 240
    return MemoryPlan(w, samples * 2 * 64 * COMPUTE_BYTES + 4 * t * 64 * 512 * COMPUTE_BYTES)


def run(ctx: StageContext) -> None:
    from ltx2.models.audio_vae import load_audio_decoder
    from ltx2.models.vocoder import load_vocoder

    ckpt = ctx.weights["checkpoint"]
    latent = ctx.inputs["latents"].read("audio")
    decoder = load_audio_decoder(ckpt)
    ctx.progress.step(0, 2)
    mel = decoder(latent)
    mx.eval(mel)
    del decoder
    vocoder = load_vocoder(ckpt)
    ctx.progress.step(1, 2)
    wave = vocoder(mel)[0]  # (channels, samples)
    mx.eval(wave)
    w = ctx.writer()
    w.write_array("waveform", wave.astype(mx.float32))
    w.finalize(facts={"sample_rate": int(vocoder.cfg.output_sampling_rate), "channels": int(wave.shape[0]),
                      "sample_count": int(wave.shape[1])})
    ctx.progress.step(2, 2)
