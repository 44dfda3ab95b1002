"""LTX-2.3's vocoder: a BigVGAN at a low rate, then bandwidth extension (BWE) to the output rate.

The low-rate generator turns the stereo mel into a waveform (16 kHz in the released model). That
waveform is padded with zeros to whole STFT hops and takes two paths:

- a skip path: resampled by the whole ratio with a Hann-windowed sinc (the kernel of torchaudio's
  ``resample``: zero-stuffing, then a low-pass of ``6 / 0.99`` input samples each side);
- a residual path: its own causal log-mel (an STFT as a strided convolution with the checkpoint's
  windowed-DFT basis, left-padded by ``n_fft - hop`` so no frame looks ahead; magnitudes projected on
  the checkpoint's mel bank; ``log(max(mel, 1e-5))``) feeds a second BigVGAN whose output, one hop of
  the low rate per mel frame times the ratio, is added unbounded.

The sum is clipped to [-1, 1] and cut to the low-rate length times the ratio. The STFT and mel bases
are loaded from the checkpoint (the released ones are bf16 values); the inverse STFT basis is stored
there too and is held only so the network loads and writes back its file strictly.
"""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from .config import BweConfig
from .generator import Vocoder

ROLLOFF = 0.99  # torchaudio resample's defaults, which the official resampler reproduces
LOWPASS_WIDTH = 6
MEL_FLOOR = 1e-5


def hann_sinc_filter(ratio: int) -> np.ndarray:
    """The interpolation kernel of an integer up-sampling by ``ratio`` (taps at the high rate, symmetric)."""
    width = math.ceil(LOWPASS_WIDTH / ROLLOFF)  # input samples each side
    t = (np.arange(2 * width * ratio + 1, dtype=np.float64) / ratio - width) * ROLLOFF
    window = np.cos(np.clip(t, -LOWPASS_WIDTH, LOWPASS_WIDTH) * math.pi / LOWPASS_WIDTH / 2) ** 2
    return (np.sinc(t) * window * ROLLOFF / ratio).astype(np.float32)


class SincResampler:
    """(N, samples, 1) -> (N, samples * ratio, 1): edge-padded, zero-stuffed, filtered, trimmed to length.

    A constant (not a parameter: the checkpoint does not store it)."""

    def __init__(self, ratio: int):
        self.ratio = ratio
        self.width = math.ceil(LOWPASS_WIDTH / ROLLOFF)
        taps = hann_sinc_filter(ratio)
        self.trim_left = 2 * self.width * ratio
        self.trim_right = len(taps) - ratio
        self.kernel = taps.reshape(1, -1, 1)

    def __call__(self, x: mx.array) -> mx.array:
        n = x.shape[1]
        x = mx.pad(x, [(0, 0), (self.width, self.width), (0, 0)], mode="edge")
        # the kernel is symmetric, so a transposed convolution's tap order does not matter
        y = mx.conv_transpose1d(x, mx.array(self.kernel, dtype=x.dtype), stride=self.ratio)
        return self.ratio * y[:, self.trim_left: self.trim_left + n * self.ratio]


class STFTBases(nn.Module):
    """The windowed-DFT bases: [real rows; imaginary rows] x taps, as (2 * bins, n_fft, 1) conv kernels."""

    def __init__(self, n_fft: int):
        super().__init__()
        rows = 2 * (n_fft // 2 + 1)
        self.forward_basis = mx.zeros((rows, n_fft, 1))
        self.inverse_basis = mx.zeros((rows, n_fft, 1))  # unused: held to load and write the file strictly


class MelSTFT(nn.Module):
    """Causal log-mel of mono signals: (N, samples, 1) -> (N, samples // hop, num_mels)."""

    def __init__(self, n_fft: int, hop: int, num_mels: int):
        super().__init__()
        self.n_fft = n_fft
        self.hop = hop
        self.stft_fn = STFTBases(n_fft)
        self.mel_basis = mx.zeros((num_mels, n_fft // 2 + 1))

    def __call__(self, y: mx.array) -> mx.array:
        y = mx.pad(y, [(0, 0), (self.n_fft - self.hop, 0), (0, 0)])
        spec = mx.conv1d(y, self.stft_fn.forward_basis.astype(y.dtype), stride=self.hop)  # (N, frames, 2 * bins)
        bins = spec.shape[-1] // 2
        magnitude = mx.sqrt(mx.square(spec[..., :bins]) + mx.square(spec[..., bins:]))
        mel = magnitude @ self.mel_basis.astype(y.dtype).T
        return mx.log(mx.maximum(mel, MEL_FLOOR))


class VocoderWithBWE(nn.Module):
    """Stereo log-mel (B, 2, frames, 64) -> waveform (B, 2, frames * hop * ratio) at ``cfg.output_sampling_rate``."""

    def __init__(self, cfg: BweConfig):
        super().__init__()
        self.cfg = cfg
        self.vocoder = Vocoder(cfg.vocoder)
        self.bwe_generator = Vocoder(cfg.bwe)
        self.mel_stft = MelSTFT(cfg.n_fft, cfg.hop_length, cfg.num_mels)
        self.resampler = SincResampler(cfg.ratio)

    def low_rate(self, mel: mx.array) -> mx.array:
        """The low-rate generator's waveform (B, 2, samples) at ``cfg.input_sampling_rate``."""
        return self.vocoder(mel)

    def __call__(self, mel: mx.array) -> mx.array:
        x = self.low_rate(mel.astype(mx.float32))  # float32 whatever the stage's compute (load_vocoder)
        b, c, n = x.shape
        hop = self.cfg.hop_length
        x = mx.pad(x, [(0, 0), (0, 0), (0, -n % hop)])  # whole mel frames
        mono = x.reshape(b * c, -1, 1)  # each channel on its own
        logmel = self.mel_stft(mono)
        residual = self.bwe_generator(logmel.reshape(b, c, *logmel.shape[1:]))
        skip = self.resampler(mono).reshape(b, c, -1)
        out = mx.clip(residual + skip, -1.0, 1.0)
        return out[..., : n * self.cfg.ratio]
