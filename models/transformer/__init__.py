"""The LTX-2 (19B) and LTX-2.3 (22B) audio-video diffusion transformer in MLX."""

from .config import BlockConfig, TransformerConfig, TransformerConfigError
from .loader import TRANSFORMER_KEYMAP, load_transformer
from .model import LTX2Transformer, ModalityInput, PositionalTables, to_x0
from .perturbations import ALL, Perturbation, Skip

__all__ = ["BlockConfig", "TransformerConfig", "TransformerConfigError", "TRANSFORMER_KEYMAP", "load_transformer",
           "LTX2Transformer",
           "ModalityInput", "PositionalTables", "to_x0", "ALL", "Perturbation", "Skip"]
