"""LTX-2 latent upsampler (spatial x2, rational x0.75/x1.5/x2/x4, temporal x2) and its normalising wrapper."""

from .config import UpsamplerConfig, UpsamplerConfigError
from .loader import UPSAMPLER_KEYMAP, load_upsampler
from .model import LatentUpsampler
from .statistics import LatentStatistics, load_latent_statistics, upsample_latent

__all__ = ["UpsamplerConfig", "UpsamplerConfigError", "LatentUpsampler", "load_upsampler", "UPSAMPLER_KEYMAP",
           "LatentStatistics", "load_latent_statistics", "upsample_latent"]
