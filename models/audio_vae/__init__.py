"""LTX-2 audio VAE in MLX: log-mel front-end, causal 2-D conv encoder / decoder, latent statistics."""

from .config import LATENT_DOWNSAMPLE_FACTOR, AudioConfigError, AudioVAEConfig
from .decoder import AudioDecoder
from .encoder import AudioEncoder
from .loading import AUDIO_DECODER_KEYMAP, AUDIO_ENCODER_KEYMAP, load_audio_decoder, load_audio_encoder
from .processor import AudioProcessor, mel_filterbank, resample_waveform

__all__ = ["LATENT_DOWNSAMPLE_FACTOR", "AudioConfigError", "AudioVAEConfig", "AudioDecoder", "AudioEncoder",
           "AudioProcessor", "load_audio_decoder", "load_audio_encoder", "mel_filterbank", "resample_waveform",
           "AUDIO_DECODER_KEYMAP", "AUDIO_ENCODER_KEYMAP"]
