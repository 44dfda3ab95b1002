"""Which layers of each network are quantised, and how many bytes weights take.

Quantisation is MLX's own affine scheme (``nn.quantize`` / ``mx.quantize``): per group of
``group_size`` consecutive input weights of a row, a scale and a bias, the weights stored as
``bits``-bit integers packed into uint32. Only Linear layers INSIDE the repeated blocks are
quantised; everything outside them, which is small but sets the scale of everything downstream,
stays float. One rule serves every network:

    a Linear is quantised iff its path lies inside ``transformer_blocks.N`` / ``layers.N`` /
    ``blocks.N`` and its input width is a multiple of ``group_size`` (MLX quantises along it).

What that means per network:

- transformer (``LTX2Transformer``): quantised: in every ``transformer_blocks.N`` the q/k/v/out
  projections of the six attentions (attn1, attn2, audio_attn1, audio_attn2, audio_to_video_attn,
  video_to_audio_attn) and the two layers of ``ff`` / ``audio_ff`` (>99% of the 19B weights).
  Float: ``patchify_proj`` / ``audio_patchify_proj`` (latent in), ``proj_out`` / ``audio_proj_out``
  (velocity out), the caption projections, the six AdaLN modules (``adaln_single``,
  ``audio_adaln_single``, ``av_ca_*``: timestep embedders and their 6x/4x/1x modulation Linears),
  every ``scale_shift_table`` and the q/k RMSNorms.
- Gemma-3 (``GemmaEncoder``): quantised: in every ``model.layers.N`` q/k/v/o_proj and the MLP's
  gate/up/down_proj. Float: ``embed_tokens`` (unless ``quantize_embeddings``; it is 1B of the 12B
  weights, only looked up, never multiplied) and every RMSNorm.
- text embeddings (``EmbeddingsProcessor``): quantised: the Linears of the connectors'
  ``blocks.N``. Float: the text projection ``feature_extractor.aggregate_embed`` (the layer that
  mixes all 49 Gemma hidden states), the learnable registers and the norms.
- the VAEs, vocoder and upsampler are convolutional: nothing in them is quantised.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

# MLX's affine mode accepts these
SUPPORTED_BITS = (2, 3, 4, 5, 6, 8)
SUPPORTED_GROUP_SIZES = (32, 64, 128)

_IN_BLOCK = re.compile(r"(^|\.)(transformer_blocks|layers|blocks)\.\d+\.")


def check_quantization(bits: int, group_size: int) -> None:
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"bits={bits!r} is not supported (MLX affine quantisation takes {list(SUPPORTED_BITS)})")
    if group_size not in SUPPORTED_GROUP_SIZES:
        raise ValueError(f"group_size={group_size!r} is not supported (MLX takes {list(SUPPORTED_GROUP_SIZES)})")


def should_quantize(path: str, module: nn.Module, group_size: int, *, quantize_embeddings: bool = False) -> bool:
    """The policy above, for one leaf module at ``path`` (dotted, relative to the network's root)."""
    if isinstance(module, nn.Linear):
        return bool(_IN_BLOCK.search(path)) and module.weight.shape[-1] % group_size == 0
    if isinstance(module, nn.Embedding):
        return quantize_embeddings and module.weight.shape[-1] % group_size == 0
    return False


def quantize_module(module: nn.Module, bits: int, group_size: int = 64, *,
                    quantize_embeddings: bool = False) -> nn.Module:
    """Quantise ``module`` in place with ``nn.quantize`` (affine, ``bits``, ``group_size``) by the policy
    above; returns it. Works on a lazily built module too (nothing is evaluated), so the quantised
    structure of a 19B model can be planned without its weights."""
    check_quantization(bits, group_size)
    nn.quantize(module, group_size=group_size, bits=bits,
                class_predicate=lambda p, m: should_quantize(p, m, group_size, quantize_embeddings=quantize_embeddings))
    return module


def quantized_layers(module: nn.Module) -> dict[str, tuple[int, int]]:
    """Path -> (bits, group_size) of every quantised leaf layer in ``module``."""
    out = {}
    for path, m in tree_flatten(module.leaf_modules(), is_leaf=lambda x: isinstance(x, nn.Module)):
        if isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)):
            out[path] = (m.bits, m.group_size)
    return out


def quantized_nbytes(shape: Sequence[int], bits: int, group_size: int, scale_bytes: int = 4) -> int:
    """Bytes of one weight of ``shape`` (..., in) once quantised: the packed integers plus one scale and one
    bias per group, each ``scale_bytes`` wide (4: float32, as converted files store them and float32
    compute holds them; 2 for bf16 scales)."""
    check_quantization(bits, group_size)
    *rows, cols = shape
    if cols % group_size:
        raise ValueError(f"shape {tuple(shape)}: input width {cols} is not a multiple of group_size {group_size}")
    n_rows = math.prod(rows)
    packed = n_rows * (cols * bits // 32) * 4  # uint32 words
    return packed + 2 * n_rows * (cols // group_size) * scale_bytes


def module_nbytes(module: nn.Module) -> int:
    """Bytes the module's parameters actually take (quantised layers at their packed size)."""
    return sum(v.nbytes for _, v in tree_flatten(module.parameters()))


def dequantized_weight(layer: nn.Module, dtype: mx.Dtype = mx.float32) -> mx.array:
    """The float weight a quantised layer stands for (for LoRA fusion and error checks)."""
    return mx.dequantize(layer["weight"], layer["scales"], layer.get("biases"), group_size=layer.group_size,
                         bits=layer.bits, mode=getattr(layer, "mode", "affine")).astype(dtype)
