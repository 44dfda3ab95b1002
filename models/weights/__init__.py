"""Weight files: header-only inspection, selective tensor reads, strict loading into modules."""

from .safetensors_file import (CheckpointError, SafetensorsHeader, TensorInfo, load_prefix, load_tensors,
                               read_header)
from .strict import conv_transpose_weight_to_mlx, conv_weight_to_mlx, load_strict

__all__ = ["CheckpointError", "SafetensorsHeader", "TensorInfo", "load_prefix", "load_tensors", "read_header",
           "load_strict", "conv_weight_to_mlx", "conv_transpose_weight_to_mlx"]
