"""Parity checks for the audio VAE (encoder, decoder, log-mel front-end) and the vocoder."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import numpy as np

from ltx2.models.audio_vae import AudioProcessor, load_audio_decoder, load_audio_encoder
from ltx2.models.vocoder import VocoderWithBWE, load_vocoder

from . import NETWORK_TOL, ParityResult, compare, load_fixture

# The oracle runs the waveform front-end with the real LTX-2 settings, whatever the tiny VAE's config says.
PROCESSOR_SETTINGS = dict(sample_rate=16000, mel_bins=64, hop_length=160, n_fft=1024)


def check_audio_vae(directory: Path, name: str) -> list[ParityResult]:
    z = load_fixture(directory, name)
    weights = Path(directory) / f"{name}.safetensors"
    encoder = load_audio_encoder(weights)
    decoder = load_audio_decoder(weights)
    latent = encoder(mx.array(z["encoder_in_spectrogram"]))
    mel = decoder(mx.array(z["decoder_in_latent"]))
    logmel = AudioProcessor(**PROCESSOR_SETTINGS)(mx.array(z["processor_in_waveform_16k"]))
    mx.eval(latent, mel, logmel)
    return [
        compare(name, "encoder_out_latent", np.array(latent), z["encoder_out_latent"], NETWORK_TOL),
        compare(name, "decoder_out_mel", np.array(mel), z["decoder_out_mel"], NETWORK_TOL),
        compare(name, "processor_out_logmel", np.array(logmel), z["processor_out_logmel"], NETWORK_TOL),
    ]


def check_vocoder(directory: Path, name: str) -> list[ParityResult]:
    z = load_fixture(directory, name)
    vocoder = load_vocoder(Path(directory) / f"{name}.safetensors")
    wav = vocoder(mx.array(z["in_mel"]))
    mx.eval(wav)
    return [compare(name, "out_waveform", np.array(wav), z["out_waveform"], NETWORK_TOL)]


def check_vocoder_bwe(directory: Path, name: str) -> list[ParityResult]:
    """LTX-2.3's vocoder: the low-rate generator's waveform and the bandwidth-extended one."""
    z = load_fixture(directory, name)
    vocoder = load_vocoder(Path(directory) / f"{name}.safetensors")
    if not isinstance(vocoder, VocoderWithBWE):
        return [ParityResult(name, "-", None, None, "FAIL", "the fixture's config did not give a BWE vocoder")]
    mel = mx.array(z["in_mel"])
    low, wav = vocoder.low_rate(mel), vocoder(mel)
    mx.eval(low, wav)
    return [
        compare(name, "intermediate_vocoder_24k", np.array(low), z["intermediate_vocoder_24k"], NETWORK_TOL),
        compare(name, "out_waveform_48k", np.array(wav), z["out_waveform_48k"], NETWORK_TOL),
        compare(name, "output_sampling_rate", vocoder.cfg.output_sampling_rate, 48000, 0.0),
    ]
