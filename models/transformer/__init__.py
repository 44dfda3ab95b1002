"""The LTX-2 audio-video diffusion transformer (19B layout) in MLX."""

from .config import BlockConfig, TransformerConfig, TransformerConfigError
from .loader import TRANSFORMER_KEYMAP, load_transformer
from .model import LTX2Transformer, ModalityInput, PositionalTables, to_x0
from .perturbations import ALL, Perturbation, Skip

__all__ = ["BlockConfig", "TransformerConfig", "TransformerConfigError", "TRANSFORMER_KEYMAP", "load_transformer",
           "LTX2Transformer",
           "ModalityInput", "PositionalTables", "to_x0", "ALL", "Perturbation", "Skip"]
