"""Memory estimates a stage makes before loading anything: weight bytes from safetensors headers."""

from __future__ import annotations

import math
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

from ltx2.models.weights import read_header

COMPUTE_BYTES = 4  # float32 compute (the only exact choice on CPU; the planner issue adds bf16 / q8 / q4)


def _element_counts(path: Path, prefixes: Iterable[str], exclude: Iterable[str] = ()) -> list[int]:
    """Element count of every tensor under ``prefixes`` (less ``exclude``), from the header."""
    prefixes, exclude = tuple(prefixes), tuple(exclude)
    return [math.prod(t.shape) for key, t in cached_header(path).tensors.items()
            if key.startswith(prefixes) and not key.startswith(exclude)]


def weight_bytes(path: Path, prefixes: Iterable[str], exclude: Iterable[str] = (),
                 bytes_per_element: int = COMPUTE_BYTES) -> int:
    """Bytes the tensors under ``prefixes`` (less ``exclude``) take once loaded at the compute precision."""
    return sum(_element_counts(path, prefixes, exclude)) * bytes_per_element


def conv_weight_copy_bytes(path: Path, prefixes: Iterable[str], exclude: Iterable[str] = (),
                           bytes_per_element: int = COMPUTE_BYTES) -> int:
    """A contiguous copy of the largest tensor under ``prefixes``, held during a convolution with it.

    Conv weights are loaded as transposed views of the file's PyTorch layout (strict.conv_weight_to_mlx), and
    MLX's CPU convolution copies a non-contiguous weight to a contiguous float32 buffer on every call: a conv
    stage holds one such copy, of at most its largest tensor, on top of its weights (measured: 108 MiB of the
    full-size upscale's peak, the copy of a 1024x1024x3x3x3 weight)."""
    return max(_element_counts(path, prefixes, exclude), default=0) * bytes_per_element


# ---------------------------------------------------------------------------------------------------
# Weights held under a WeightsMode (precision, streaming): see models/weights/modes.py for the rules.

@lru_cache(maxsize=64)
def _header(path: str, size: int, mtime_ns: int):
    return read_header(path)


def cached_header(path: Path):
    """``read_header``, memoised per file version: the planner asks each stage's estimate() for every
    candidate, and a 19B checkpoint's header is ~1 MB of JSON."""
    st = Path(path).stat()
    return _header(str(path), st.st_size, st.st_mtime_ns)


def header_tensors(path: Path, keys: Iterable[str] | None = None, prefixes: Iterable[str] = (),
                   exclude: Iterable[str] = ()) -> dict[str, tuple[tuple[int, ...], int]]:
    """key -> (shape, stored bytes) of the tensors of one file: ``keys``, or those under ``prefixes``."""
    tensors = cached_header(path).tensors
    if keys is None:
        prefixes, exclude = tuple(prefixes), tuple(exclude)
        keys = [k for k in tensors if k.startswith(prefixes) and not k.startswith(exclude)]
    return {k: (tensors[k].shape, tensors[k].nbytes) for k in keys}


TRANSFORMER_PREFIX = "model.diffusion_model."
TEXT_CONNECTOR_PREFIXES = ("model.diffusion_model.video_embeddings_connector.",
                           "model.diffusion_model.audio_embeddings_connector.")


def converted_part(path: Path, part: str):
    """The ConvertedFile holding ``part`` when ``path`` is a file written by `ltx2 convert`, else None."""
    from ltx2.models.weights.converted import FORMAT, open_converted

    path = Path(path)
    if not path.is_file() or cached_header(path).metadata.get("format") != FORMAT:
        return None
    f = open_converted(path)
    return f if part in f.parts else None


def converted_tensors(f, part: str, under: str = "", skip: tuple[str, ...] = ()):
    """(tensors, packed) of a converted part for ``held_bytes``: module names under ``under`` (minus ``skip``);
    packed: the already-quantised tensors (weights, scales, biases) with the float32 bytes they stand for."""
    info = f.part(part)
    n = len(info.prefix) + len(under)
    tensors, packed = {}, {}
    all_t = f.header.tensors
    for key in f.keys(part, under):
        name = key[n:]
        if name.startswith(skip):
            continue
        t = all_t[key]
        tensors[name] = (t.shape, t.nbytes)
        stem = name.rsplit(".", 1)[0]
        w = all_t.get(f"{info.prefix}{under}{stem}.weight")
        if w is not None and w.dtype == "U32" and info.bits and name.endswith((".weight", ".scales", ".biases")):
            rows, cols = w.shape
            packed[name] = rows * cols * (32 // info.bits) * COMPUTE_BYTES if name.endswith(".weight") else t.nbytes
    return tensors, packed


def file_quantization(path: Path, part: str) -> tuple[int, int] | None:
    """(bits, group_size) when ``path`` is a converted file holding ``part`` quantised, else None."""
    f = converted_part(path, part)
    if f is None or not f.part(part).bits:
        return None
    return f.part(part).bits, f.part(part).group_size


def transformer_held(checkpoint: Path, mode):
    """HeldBytes of the transformer (the checkpoint's ``model.diffusion_model.*`` less the text connectors)."""
    st = Path(checkpoint).stat()
    return _transformer_held(str(checkpoint), st.st_size, st.st_mtime_ns, mode)


@lru_cache(maxsize=64)
def _transformer_held(checkpoint: str, _size: int, _mtime_ns: int, mode):
    from ltx2.models.weights.modes import held_bytes

    checkpoint = Path(checkpoint)

    f = converted_part(checkpoint, "transformer")
    if f is not None:
        tensors, packed = converted_tensors(f, "transformer")
        return held_bytes(tensors, mode, packed)
    return held_bytes(header_tensors(checkpoint, prefixes=(TRANSFORMER_PREFIX,), exclude=TEXT_CONNECTOR_PREFIXES),
                      mode)


def gemma_held(gemma: Path, mode):
    """HeldBytes of Gemma's language model, without its embedding table (read by rows, never held)."""
    from ltx2.models.text.gemma import weight_plan
    from ltx2.models.text.streaming import EMBED
    from ltx2.models.weights.modes import held_bytes

    f = converted_part(Path(gemma), "gemma")
    if f is not None:
        tensors, packed = converted_tensors(f, "gemma", "model.", skip=("embed_tokens.",))
        return held_bytes(tensors, mode, packed)
    _, prefix, per_file = weight_plan(Path(gemma))
    tensors: dict[str, tuple[tuple[int, ...], int]] = {}
    for file, keys in per_file.items():
        tensors.update(header_tensors(Path(file), [k for k in keys if k != prefix + EMBED]))
    return held_bytes(tensors, mode)


def lora_block_bytes(loras: Iterable[Path], num_blocks: int) -> int:
    """A LoRA's A and B for one block, in float32 (read while fusing one block), on average."""
    total = 0
    for p in loras:
        for t in cached_header(p).tensors.values():
            n = 1
            for d in t.shape:
                n *= d
            total += n * COMPUTE_BYTES
    return total // max(num_blocks, 1)
