"""LTX-2 vocoder in MLX: stereo log-mel -> waveform (HiFi-GAN or BigVGAN v2 at 24 kHz; LTX-2.3: BigVGAN plus
bandwidth extension to 48 kHz)."""

from .bigvgan import kaiser_sinc_filter
from .bwe import VocoderWithBWE
from .config import BweConfig, VocoderConfig, VocoderConfigError, vocoder_config
from .generator import Vocoder
from .loading import VOCODER_KEYMAP, build_vocoder, load_vocoder

__all__ = ["BweConfig", "Vocoder", "VocoderConfig", "VocoderConfigError", "VocoderWithBWE", "build_vocoder",
           "kaiser_sinc_filter", "load_vocoder", "vocoder_config", "VOCODER_KEYMAP"]
