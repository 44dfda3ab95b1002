"""LTX-2 vocoder in MLX: stereo log-mel -> 24 kHz waveform (HiFi-GAN, or BigVGAN v2 AMP blocks)."""

from .bigvgan import kaiser_sinc_filter
from .config import VocoderConfig, VocoderConfigError
from .generator import Vocoder
from .loading import VOCODER_KEYMAP, load_vocoder

__all__ = ["Vocoder", "VocoderConfig", "VocoderConfigError", "kaiser_sinc_filter", "load_vocoder", "VOCODER_KEYMAP"]
