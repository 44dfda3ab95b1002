"""The LTX-2 audio-video diffusion transformer (19B layout) in MLX."""

from .config import TransformerConfig, UnsupportedConfigError
from .loader import load_transformer, sanitize
from .model import LTX2Transformer, ModalityInput, PositionalTables, to_x0
from .perturbations import ALL, Perturbation, Skip

__all__ = ["TransformerConfig", "UnsupportedConfigError", "load_transformer", "sanitize", "LTX2Transformer",
           "ModalityInput", "PositionalTables", "to_x0", "ALL", "Perturbation", "Skip"]
