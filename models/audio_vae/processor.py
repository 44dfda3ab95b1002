"""Waveform -> log-mel front-end of the audio VAE, and resampling of other input rates.

It computes what the official AudioProcessor computes with torchaudio's MelSpectrogram: a centred
STFT (reflect padding of n_fft/2 each side, periodic Hann window of n_fft, hop 160 at 16 kHz),
magnitude (power 1), a Slaney-scale, Slaney-normalised mel filterbank from 0 Hz to Nyquist, and
log(max(mel, 1e-5)). The ``stft.causal`` flag of the config only shifts latent timestamps; the
official front-end is centred regardless, so this one is too.

The STFT runs in MLX (frames gathered by index, ``mx.fft.rfft``): it is the first step of the
encode path and works on whole clips, so it belongs on the accelerator with the encoder rather
than in a numpy pre-pass. Only the constant window and filterbank are built with numpy, once.
Resampling is host-side preprocessing of the decoded input file and uses libsoxr.
"""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np
import soxr

from .config import AudioVAEConfig

LOG_FLOOR = 1e-5

# Slaney mel scale: linear (200/3 Hz per mel) below 1 kHz, logarithmic (27 mels per factor 6.4) above.
_F_SP = 200.0 / 3.0
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = math.log(6.4) / 27.0


def hz_to_mel_slaney(f: np.ndarray) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    lin = f / _F_SP
    log = _MIN_LOG_MEL + np.log(np.maximum(f, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(f >= _MIN_LOG_HZ, log, lin)


def mel_to_hz_slaney(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    lin = m * _F_SP
    log = _MIN_LOG_HZ * np.exp(_LOGSTEP * (np.maximum(m, _MIN_LOG_MEL) - _MIN_LOG_MEL))
    return np.where(m >= _MIN_LOG_MEL, log, lin)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0,
                   f_max: float | None = None) -> np.ndarray:
    """(n_fft//2 + 1, n_mels) triangular filters, equally spaced in Slaney mels, area-normalised."""
    f_max = sample_rate / 2.0 if f_max is None else f_max
    n_freqs = n_fft // 2 + 1
    # torchaudio spaces the FFT bins over [0, sr // 2] (integer Nyquist); keep that for equality.
    bin_hz = np.linspace(0.0, sample_rate // 2, n_freqs)
    edges = mel_to_hz_slaney(np.linspace(hz_to_mel_slaney(f_min), hz_to_mel_slaney(f_max), n_mels + 2))
    width = np.diff(edges)
    rel = edges[None, :] - bin_hz[:, None]  # (n_freqs, n_mels + 2)
    rising = -rel[:, :-2] / width[:-1]
    falling = rel[:, 2:] / width[1:]
    fb = np.maximum(0.0, np.minimum(rising, falling))
    fb *= 2.0 / (edges[2:] - edges[:-2])  # Slaney norm: each filter has unit area in Hz
    return fb


def hann_periodic(n: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


def resample_waveform(waveform: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample (..., samples) float audio from ``sr_in`` to ``sr_out`` Hz with libsoxr (very high quality)."""
    if sr_in == sr_out:
        return np.asarray(waveform, dtype=np.float32)
    x = np.asarray(waveform, dtype=np.float32)
    lead = x.shape[:-1]
    chans = x.reshape(-1, x.shape[-1]).T  # soxr wants (frames, channels)
    y = soxr.resample(np.ascontiguousarray(chans), sr_in, sr_out, quality="VHQ")
    return np.ascontiguousarray(y.T.reshape(*lead, -1)).astype(np.float32)


class AudioProcessor:
    """Stereo waveform (B, C, samples) at ``sample_rate`` -> log-mel (B, C, frames, mel_bins)."""

    def __init__(self, sample_rate: int = 16000, mel_bins: int = 64, hop_length: int = 160, n_fft: int = 1024):
        self.sample_rate = sample_rate
        self.mel_bins = mel_bins
        self.hop_length = hop_length
        self.n_fft = n_fft
        self.window = mx.array(hann_periodic(n_fft).astype(np.float32))
        self.filterbank = mx.array(mel_filterbank(sample_rate, n_fft, mel_bins).astype(np.float32))

    @classmethod
    def from_config(cls, cfg: AudioVAEConfig) -> "AudioProcessor":
        """The front-end the official encode path builds for an encoder of this config."""
        if cfg.mel_bins is None:
            raise ValueError("audio_vae config names no mel bin count (ddconfig.mel_bins / preprocessing.mel)")
        return cls(cfg.sample_rate, cfg.mel_bins, cfg.mel_hop_length, cfg.n_fft)

    def n_frames(self, samples: int) -> int:
        return 1 + samples // self.hop_length

    def __call__(self, waveform, sample_rate: int | None = None) -> mx.array:
        """``waveform`` (B, C, samples) (numpy or MLX); resampled first when ``sample_rate`` differs."""
        if sample_rate is not None and sample_rate != self.sample_rate:
            waveform = mx.array(resample_waveform(np.asarray(waveform), sample_rate, self.sample_rate))
        x = mx.array(waveform).astype(mx.float32) if not isinstance(waveform, mx.array) else waveform.astype(mx.float32)
        n = x.shape[-1]
        half = self.n_fft // 2
        if n <= half:
            raise ValueError(f"waveform of {n} samples is too short for a centred STFT with n_fft={self.n_fft} "
                             f"(needs more than {half})")
        # reflect padding (the edge sample itself is not repeated)
        x = mx.concatenate([x[..., half:0:-1], x, x[..., n - 2:n - half - 2:-1]], axis=-1)
        frames = self.n_frames(n)
        idx = mx.arange(frames)[:, None] * self.hop_length + mx.arange(self.n_fft)[None, :]
        spec = mx.abs(mx.fft.rfft(x[..., idx] * self.window, axis=-1))  # (B, C, frames, n_freqs)
        mel = spec @ self.filterbank
        return mx.log(mx.maximum(mel, LOG_FLOOR))
