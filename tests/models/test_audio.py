"""Audio VAE, log-mel front-end and vocoder (with LTX-2.3's bandwidth extension): behaviour beyond parity
(refusals, resampling, loaders)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten, tree_unflatten
from safetensors.numpy import load_file, save_file

from support import v12_fixture_sets

from ltx2.models.audio_vae import (AudioConfigError, AudioProcessor, AudioVAEConfig, load_audio_decoder,
                                   load_audio_encoder, resample_waveform)
from ltx2.models.vocoder import (BweConfig, VocoderConfig, VocoderConfigError, VocoderWithBWE, kaiser_sinc_filter,
                                 load_vocoder, vocoder_config)
from ltx2.models.vocoder.bwe import SincResampler
from ltx2.models.vocoder.loading import to_checkpoint as vocoder_to_checkpoint
from ltx2.models.weights import CheckpointError, read_header

FIX = Path(__file__).parents[1] / "fixtures" / "seed0"


def _rewrite(src: Path, dst: Path, drop: str | None = None, config: dict | None = None,
             extra: dict | None = None) -> Path:
    tensors = {k: v for k, v in load_file(str(src)).items() if k != drop}
    tensors.update(extra or {})
    cfg = config if config is not None else read_header(src).config()
    save_file(tensors, str(dst), metadata={"config": json.dumps(cfg)})
    return dst


def _sine(freq: float, sr: int, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    s = 0.5 * np.sin(2 * np.pi * freq * t)
    return np.stack([s, s])[None].astype(np.float32)  # (1, 2, samples)


# --- vocoder -----------------------------------------------------------------------------------
def _bwe_section(**bwe) -> dict:
    """A BWE vocoder section from the committed AMP fixture's generator (LTX-2.3's shape, tiny widths)."""
    flat = dict(read_header(FIX / "vocoder_amp.safetensors").config()["vocoder"], activation="snakebeta")
    return {"vocoder": flat, "bwe": {**flat, "use_tanh_at_final": False, "input_sampling_rate": 24000,
                                     "output_sampling_rate": 48000, "n_fft": 512, "hop_length": 120, "num_mels": 64,
                                     **bwe}}


def test_bwe_vocoder_config_reads_both_generators(tmp_path: Path) -> None:
    cfg = vocoder_config({"vocoder": _bwe_section()})
    assert isinstance(cfg, BweConfig) and cfg.ratio == 2 and cfg.output_sampling_rate == 48000
    assert cfg.vocoder.output_sampling_rate == 24000 and cfg.vocoder.apply_final_activation  # tanh / clamp
    assert not cfg.bwe.apply_final_activation  # a residual: unbounded
    assert vocoder_config(_bwe_section()) == cfg  # the section alone, too
    # one generator's reader still says what it is given
    with pytest.raises(VocoderConfigError, match=r"'bwe'.*bandwidth-extension.*48000 Hz.*vocoder_config"):
        VocoderConfig.from_config({"vocoder": _bwe_section()})
    # the flat generator's tensors under a BWE config: strict loading names the generators it misses
    path = _rewrite(FIX / "vocoder_amp.safetensors", tmp_path / "bwe.safetensors", config={"vocoder": _bwe_section()})
    with pytest.raises(CheckpointError, match=r"(?s)missing tensor bwe_generator\..*unexpected tensor conv_post"):
        load_vocoder(path)


@pytest.mark.parametrize("edit, words", [
    ({"resblock": "1"}, ["vocoder.bwe.resblock='1'", "AMP1"]),
    ({"output_sampling_rate": 44100}, ["24000 Hz to 44100 Hz", "whole ratios"]),
    ({"hop_length": 100}, ["make 240 samples per mel frame", "hop_length 100 x 2 = 200"]),
    ({"num_mels": 80}, ["num_mels=80", "64-bin"]),
    ({"n_fft": None}, ["no 'n_fft'"]),
])
def test_bwe_vocoder_variants_not_built_are_refused(edit, words) -> None:
    section = _bwe_section(**edit)
    section["bwe"] = {k: v for k, v in section["bwe"].items() if v is not None}
    with pytest.raises(VocoderConfigError) as e:
        vocoder_config({"vocoder": section})
    assert all(w in str(e.value) for w in words), str(e.value)


@pytest.mark.parametrize("ratio", [2, 3])
def test_bwe_skip_path_resamples_a_band_limited_signal(ratio: int) -> None:
    rate = 16000
    t = np.arange(800) / rate
    sig = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 3000 * t + 1)).astype(np.float32)
    up = np.array(SincResampler(ratio)(mx.array(sig)[None, :, None]))[0, :, 0]
    assert up.shape == (800 * ratio,)
    th = np.arange(800 * ratio) / (rate * ratio)
    want = 0.3 * np.sin(2 * np.pi * 440 * th) + 0.2 * np.sin(2 * np.pi * 3000 * th + 1)
    inner = slice(40 * ratio, -40 * ratio)  # away from the edge padding
    assert np.max(np.abs(up[inner] - want[inner])) < 5e-3


def _random_bwe(seed: int = 0) -> VocoderWithBWE:
    voc = VocoderWithBWE(vocoder_config(_bwe_section()))
    mx.random.seed(seed)
    voc.update(tree_unflatten([(k, 0.1 * mx.random.normal(v.shape)) for k, v in tree_flatten(voc.parameters())]))
    return voc


def test_bwe_mel_is_causal() -> None:
    voc = _random_bwe()
    y = mx.random.normal((1, 1200, 1))
    later = mx.concatenate([y[:, :600], 3 * y[:, 600:]], axis=1)
    a, b = np.array(voc.mel_stft(y)), np.array(voc.mel_stft(later))
    assert a.shape == (1, 10, 64)
    np.testing.assert_array_equal(a[:, :5], b[:, :5])  # frame k sees samples up to (k + 1) * hop only
    assert not np.allclose(a[:, 5:], b[:, 5:])


def test_bwe_vocoder_output_length_rate_and_range() -> None:
    voc = _random_bwe()
    mel = mx.random.normal((2, 2, 7, 64)) - 4
    out, low = voc(mel), voc.low_rate(mel)
    assert low.shape == (2, 2, 7 * 240) and out.shape == (2, 2, 7 * 240 * 2)  # 1680 is not whole 120-sample hops
    assert float(mx.abs(out).max()) <= 1.0
    assert voc.cfg.output_sampling_rate == 48000


def test_bwe_vocoder_round_trips_the_official_keys() -> None:
    path = v12_fixture_sets()[0] / "vocoder_bwe.safetensors"  # skips (one line) where ../shared is absent
    voc = load_vocoder(path)
    assert isinstance(voc, VocoderWithBWE)
    back = {k: np.array(v) for k, v in vocoder_to_checkpoint(voc).items()}
    file = load_file(str(path))
    assert sorted(back) == sorted(file)
    for k, v in file.items():
        np.testing.assert_array_equal(back[k], v, err_msg=k)


def test_vocoder_refuses_unbuilt_resblock() -> None:
    with pytest.raises(VocoderConfigError, match="resblock='2'"):
        VocoderConfig.from_config({"vocoder": {"resblock": "2", "stereo": True}})


def test_stored_antialias_filters_are_the_kaiser_sinc_ones() -> None:
    tensors = load_file(str(FIX / "vocoder_amp.safetensors"))
    expected = kaiser_sinc_filter(0.25, 0.3, 12)
    filters = [k for k in tensors if k.endswith(".filter")]
    assert len(filters) > 10
    for k in filters:
        np.testing.assert_allclose(tensors[k].reshape(-1), expected, atol=1e-7, err_msg=k)


def test_vocoder_strict_loader_names_missing_key(tmp_path: Path) -> None:
    key = "vocoder.resblocks.4.acts2.1.downsample.lowpass.filter"
    path = _rewrite(FIX / "vocoder_amp.safetensors", tmp_path / "v.safetensors", drop=key)
    with pytest.raises(CheckpointError, match=r"missing tensor resblocks\.4\.acts2\.1\.downsample\.lowpass\.filter"):
        load_vocoder(path)


# --- audio VAE ---------------------------------------------------------------------------------
def test_audio_strict_loader_names_missing_key(tmp_path: Path) -> None:
    path = _rewrite(FIX / "audio_vae.safetensors", tmp_path / "a.safetensors",
                    drop="audio_vae.decoder.up.1.upsample.conv.conv.weight")
    load_audio_encoder(path)  # the encoder does not need it
    with pytest.raises(CheckpointError, match=r"missing tensor up\.1\.upsample\.conv\.conv\.weight \(model expects"):
        load_audio_decoder(path)


def test_loaders_read_only_their_own_prefixes(tmp_path: Path) -> None:
    """One file holding audio VAE, vocoder and foreign tensors: each loader still loads strictly."""
    voc = load_file(str(FIX / "vocoder.safetensors"))
    cfg = {**read_header(FIX / "audio_vae.safetensors").config(), **read_header(FIX / "vocoder.safetensors").config()}
    junk = {"model.diffusion_model.x.weight": np.zeros((3,), np.float32), "vae.decoder.y": np.ones((2,), np.float32)}
    path = _rewrite(FIX / "audio_vae.safetensors", tmp_path / "all.safetensors", config=cfg, extra={**voc, **junk})
    load_audio_encoder(path)
    load_audio_decoder(path)
    load_vocoder(path)


def test_unsupported_audio_config_is_refused() -> None:
    cfg = read_header(FIX / "audio_vae.safetensors").config()
    cfg["audio_vae"]["model"]["params"]["ddconfig"]["norm_type"] = "group"
    with pytest.raises(AudioConfigError, match="norm_type='group'"):
        AudioVAEConfig.from_config(cfg)


def test_decoder_length_is_causal() -> None:
    dec = load_audio_decoder(FIX / "audio_vae.safetensors")
    out = dec(mx.zeros((1, 2, 5, 4)))
    assert out.shape == (1, 2, 4 * 5 - 3, 16)


# --- log-mel front-end -------------------------------------------------------------------------
def _slaney_hz_to_mel(f: float) -> float:
    # 3 mels per 200 Hz up to 1 kHz, then 27 mels per factor 6.4
    return 3.0 * f / 200.0 if f < 1000 else 15.0 + 27.0 * math.log(f / 1000.0) / math.log(6.4)


def _slaney_mel_to_hz(m: float) -> float:
    return 200.0 * m / 3.0 if m < 15.0 else 1000.0 * 6.4 ** ((m - 15.0) / 27.0)


@pytest.mark.parametrize("band", [9, 48])  # one band in the linear (< 1 kHz) part of the scale, one in the log part
def test_mel_of_sine_peaks_in_its_band(band: int) -> None:
    # band j is centred on point j+1 of 66 points equally spaced in mels over [0, 8000 Hz]
    freq = _slaney_mel_to_hz((band + 1) * _slaney_hz_to_mel(8000.0) / 65)
    proc = AudioProcessor(sample_rate=16000, mel_bins=64, hop_length=160, n_fft=1024)
    logmel = np.array(proc(_sine(freq, 16000)))
    assert logmel.shape == (1, 2, 101, 64)
    peaks = logmel[0, :, 5:-5].argmax(-1)
    assert (peaks == band).all(), (freq, np.unique(peaks))
    # a pure tone leaves distant bands far below the peak
    assert logmel[0, 0, 50, band] - logmel[0, 0, 50, (band + 20) % 64] > 5.0


@pytest.mark.parametrize("rate", [44100, 24000])
def test_other_input_rates_are_resampled_to_16k(rate: int) -> None:
    wav = _sine(1000.0, rate)
    out = resample_waveform(wav, rate, 16000)
    assert out.shape == (1, 2, 16000)
    spectrum = np.abs(np.fft.rfft(out[0, 0]))
    assert spectrum.argmax() == 1000  # 1 Hz per bin over one second: the tone stays at 1 kHz
    # and the front-end given the original rate equals the front-end on a native 16 kHz tone
    proc = AudioProcessor()
    via_rate = np.array(proc(wav, sample_rate=rate))[..., 10:-10, :]
    native = np.array(proc(_sine(1000.0, 16000)))[..., 10:-10, :]
    assert via_rate.shape == native.shape
    strong = native > -3.0  # compare bands with real energy, not the log floor
    assert strong.sum() > 100
    np.testing.assert_allclose(via_rate[strong], native[strong], atol=1e-2)
