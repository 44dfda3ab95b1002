"""The LTX-2 video VAE in MLX: encoder, decoder (timestep-conditioned, noise from an explicit source),
and tiled decoding with the official blending, planned from a memory budget. Channels-last arrays."""

from .config import UnsupportedConfigError, VideoVAEConfig
from .decoder import DECODE_NOISE_SCALE, DECODE_TIMESTEP, VideoDecoder
from .encoder import VideoEncoder
from .loading import load_video_decoder, load_video_encoder, sanitize
from .noise import KeyNoise, NoiseSource, SuppliedNoise
from .tiling import (DecodeDoesNotFit, DecodeTile, SpatialTiling, TemporalTiling, TileBlender, TilePlan, TilingChoice,
                     TilingConfig, choose_tiling, decode_tiled_video, decode_tiles, estimate_decode_bytes, plan_tiles,
                     tiled_decode)

__all__ = [
    "UnsupportedConfigError", "VideoVAEConfig", "DECODE_NOISE_SCALE", "DECODE_TIMESTEP", "VideoDecoder",
    "load_video_decoder", "VideoEncoder", "load_video_encoder", "sanitize", "KeyNoise", "NoiseSource",
    "SuppliedNoise", "DecodeDoesNotFit", "DecodeTile", "SpatialTiling", "TemporalTiling", "TileBlender", "TilePlan",
    "TilingChoice", "TilingConfig", "choose_tiling", "decode_tiled_video", "decode_tiles", "estimate_decode_bytes",
    "plan_tiles", "tiled_decode",
]
