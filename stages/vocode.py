"""vocode: latents.zarr -> audio.zarr (audio VAE decoder to log-mel, then the vocoder to a waveform)."""

from __future__ import annotations

import mlx.core as mx

from ltx2.models.audio_vae import LATENT_DOWNSAMPLE_FACTOR, AudioConfigError, AudioVAEConfig, load_audio_decoder
from ltx2.models.vocoder import BweConfig, VocoderConfig, VocoderConfigError, load_vocoder, vocoder_config
from ltx2.spec.layout import CHECKPOINT_PARTS
from ltx2.spec.precision import Compute

from .contract import BadInput, MemoryPlan
from .memory import COMPUTE_BYTES, cached_header, compute_bytes, compute_of, weight_bytes
from .params import compute_field
from .registry import Port, PredictedOutput, StageContext, StageDef, StageParams


class Params(StageParams):
    """vocode has one parameter, the compute precision: the checkpoint's audio decoder and vocoder decide the
    rest (LTX-2.3's vocoder with bandwidth extension computes in float32 whatever it says)."""

    compute: Compute = compute_field()


# Peak RSS of the vocode stage (MLX 0.32, CPU, full-size LTX-2 audio decoder and vocoder), less the process
# and the weights, in activations of each network's widest grid (measured in float32, rounded up; counted at the
# compute width):
# - audio decoder: ~11 activations of (mel frames x mel bins x its widest channel count);
# - vocoder: ~47 of one level's (samples x channels, the same at every level after the first). MLX's CPU
#   convolution unfolds a kernel-k input k-fold (k up to 11) and dispatches ahead of the slow dilated
#   convolutions, so several unfolded buffers are alive at once; the decoder's freed memory stays in the
#   process heap meanwhile.
DECODER_ACTIVATIONS = 11
VOCODER_ACTIVATIONS = 50


def _configs(ctx: StageContext) -> tuple[AudioVAEConfig, VocoderConfig | BweConfig]:
    """The checkpoint's audio decoder and vocoder configs (LTX-2.3: the vocoder with bandwidth extension); one
    these networks cannot run is bad input."""
    ckpt = ctx.weights["checkpoint"]
    try:
        config = cached_header(ckpt).config()
        return AudioVAEConfig.from_config(config), vocoder_config(config)
    except (AudioConfigError, VocoderConfigError) as e:
        raise BadInput(f"{ckpt}: {e}") from e


def predict(ctx: StageContext) -> PredictedOutput:
    _, voc = _configs(ctx)
    a_frames = ctx.inputs["latents"].shape("audio")[2]
    rate = int(voc.output_sampling_rate)
    n = max(4 * a_frames - 3, 1) * rate // 100  # the mel frames the audio decoder makes, at the vocoder's hop
    return PredictedOutput({"waveform": (2, n)}, {"sample_rate": rate, "channels": 2, "sample_count": n})


def estimate(ctx: StageContext) -> MemoryPlan:
    """The decoder runs and is freed before the vocoder loads; both weights are counted (the allocator keeps
    the decoder's pages), with the larger network's activations, at the compute width (LTX-2.3's vocoder with
    bandwidth extension: float32 whatever the compute, as v1.2.0 runs it)."""
    ckpt = ctx.weights["checkpoint"]
    b = compute_bytes(ctx)
    dec, voc = _configs(ctx)
    vb = COMPUTE_BYTES if isinstance(voc, BweConfig) else b
    parts = CHECKPOINT_PARTS["audio_decoder"]
    w = (weight_bytes(ckpt, parts, exclude=CHECKPOINT_PARTS["vocoder"], bytes_per_element=b)
         + weight_bytes(ckpt, CHECKPOINT_PARTS["vocoder"], bytes_per_element=vb))
    _, _, t, bins = ctx.inputs["latents"].shape("audio")
    up = 2 ** (dec.num_resolutions - 1)  # the decoder's time and frequency upsampling
    decoder = t * up * bins * up * dec.ch * max(dec.ch_mult)
    frames = LATENT_DOWNSAMPLE_FACTOR * t  # mel frames (AudioDecoder.output_frames, at most)
    if isinstance(voc, BweConfig):  # the BWE generator runs after the low-rate one, on its waveform's own mel
        low = frames * voc.vocoder.hop
        level = max(_level(voc.vocoder, frames), _level(voc.bwe, -(-low // voc.hop_length)))
    else:
        level = _level(voc, frames)
    return MemoryPlan(w, max(DECODER_ACTIVATIONS * decoder * b, VOCODER_ACTIVATIONS * level * vb))


def _level(gen: VocoderConfig, frames: int) -> int:
    """One generator's largest level (samples x channels) from ``frames`` mel frames."""
    level, samples = 0, frames
    for i, rate in enumerate(gen.upsample_rates):
        samples *= rate
        level = max(level, samples * (gen.upsample_initial_channel >> (i + 1)))
    if gen.is_amp:  # BigVGAN's anti-aliased activations work at twice the samples (not measured)
        level *= 2
    return level


def run(ctx: StageContext) -> None:
    ckpt = ctx.weights["checkpoint"]
    latent = ctx.inputs["latents"].read("audio")
    decoder = load_audio_decoder(ckpt, compute_of(ctx))
    ctx.progress.step(0, 2)
    mel = decoder(latent)
    mx.eval(mel)
    del decoder
    vocoder = load_vocoder(ckpt, compute_of(ctx))
    ctx.progress.step(1, 2)
    wave = vocoder(mel)[0]  # (channels, samples)
    mx.eval(wave)
    w = ctx.writer()
    w.write_array("waveform", wave.astype(mx.float32))
    w.finalize(facts={"sample_rate": int(vocoder.cfg.output_sampling_rate), "channels": int(wave.shape[0]),
                      "sample_count": int(wave.shape[1])})
    ctx.progress.step(2, 2)


STAGE = StageDef(
    name="vocode", version=1, summary="latents -> waveform (audio VAE decoder to log-mel, then the vocoder)",
    inputs={"latents": Port("latents")}, params=Params, output_kind="audio", output_name="audio.zarr",
    weights={"checkpoint": "audio_decoder"}, check=_configs, estimate=estimate, run=run, predict=predict,
    budget_fix="raise memory_budget",
)
