"""The LTX-2 video VAE in MLX: encoder, decoder (timestep-conditioned, noise from an explicit source),
and tiled decoding with the official blending, planned from a memory budget. Channels-last arrays."""

from .config import VAEConfigError, VideoVAEConfig
from .decoder import DECODE_NOISE_SCALE, DECODE_TIMESTEP, VideoDecoder
from .encoder import VideoEncoder
from .loading import VIDEO_DECODER_KEYMAP, VIDEO_ENCODER_KEYMAP, load_video_decoder, load_video_encoder
from .noise import KeyNoise, NoiseSource, SuppliedNoise
from .tiling import (DecodeDoesNotFit, DecodeTile, SpatialTiling, TemporalTiling, TileBlender, TilePlan, TilingChoice,
                     TilingConfig, choose_tiling, decode_tiled_video, decode_tiles, estimate_decode_bytes, plan_tiles,
                     tiled_decode)

__all__ = [
    "VAEConfigError", "VideoVAEConfig", "DECODE_NOISE_SCALE", "DECODE_TIMESTEP", "VideoDecoder",
    "load_video_decoder", "VideoEncoder", "load_video_encoder", "VIDEO_DECODER_KEYMAP", "VIDEO_ENCODER_KEYMAP",
    "KeyNoise", "NoiseSource",
    "SuppliedNoise", "DecodeDoesNotFit", "DecodeTile", "SpatialTiling", "TemporalTiling", "TileBlender", "TilePlan",
    "TilingChoice", "TilingConfig", "choose_tiling", "decode_tiled_video", "decode_tiles", "estimate_decode_bytes",
    "plan_tiles", "tiled_decode",
]
