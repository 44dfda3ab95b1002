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


# Peak RSS of the vocode stage (MLX 0.32, CPU, full-size LTX-2 audio decoder and vocoder), less the process
# and the weights, in float32 activations of each network's widest grid (measured, rounded up):
# - audio decoder: ~11 activations of (mel frames x mel bins x its widest channel count);
# - vocoder: ~47 of one level's (samples x channels, the same at every level after the first). MLX's CPU
#   convolution unfolds a kernel-k input k-fold (k up to 11) and dispatches ahead of the slow dilated
#   convolutions, so several unfolded buffers are alive at once; the decoder's freed memory stays in the
#   process heap meanwhile.
DECODER_ACTIVATIONS = 11
VOCODER_ACTIVATIONS = 50


def estimate(ctx: StageContext) -> MemoryPlan:
    """The decoder runs and is freed before the vocoder loads; both weights are counted (the allocator keeps
    the decoder's pages), with the larger network's activations."""
    from ltx2.models.audio_vae import LATENT_DOWNSAMPLE_FACTOR, AudioConfigError, AudioVAEConfig
    from ltx2.models.vocoder import VocoderConfig, VocoderConfigError
    from ltx2.models.weights import read_header

    from .contract import BadInput

    ckpt = ctx.weights["checkpoint"]
    w = weight_bytes(ckpt, ("audio_vae.decoder.", "audio_vae.per_channel_statistics.", "vocoder."))
    try:
        config = read_header(ckpt).config()
        dec, voc = AudioVAEConfig.from_config(config), VocoderConfig.from_config(config)
    except (AudioConfigError, VocoderConfigError) as e:
        raise BadInput(f"{ckpt}: {e}") from e
    _, _, t, bins = ctx.inputs["latents"].shape("audio")
    up = 2 ** (dec.num_resolutions - 1)  # the decoder's time and frequency upsampling
    decoder = t * up * bins * up * dec.ch * max(dec.ch_mult)
    level, samples = 0, LATENT_DOWNSAMPLE_FACTOR * t  # mel frames (AudioDecoder.output_frames, at most)
    for i, rate in enumerate(voc.upsample_rates):
        samples *= rate
        level = max(level, samples * (voc.upsample_initial_channel >> (i + 1)))
    if voc.is_amp:  # BigVGAN's anti-aliased activations work at twice the samples (not measured)
        level *= 2
    return MemoryPlan(w, max(DECODER_ACTIVATIONS * decoder, VOCODER_ACTIVATIONS * level) * COMPUTE_BYTES)


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
