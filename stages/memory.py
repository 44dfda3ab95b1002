"""Memory estimates a stage makes before loading anything: weight bytes from safetensors headers."""

from __future__ import annotations

import math
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

import mlx.core as mx

from ltx2.models.precision import compute_dtype
from ltx2.models.weights import read_header
from ltx2.models.weights.converted import FORMAT, open_converted
from ltx2.models.weights.modes import CANDIDATES, WeightsMode, block_index, held_bytes
from ltx2.spec.precision import compute_itemsize

COMPUTE_BYTES = 4  # float32: weights read and fused in float32 (a LoRA's A and B, a quantised matrix dequantised)


def compute_bytes(ctx) -> int:
    """Bytes per activation element at the stage's ``compute`` precision (float32 where a stage has none)."""
    return compute_itemsize(getattr(ctx.params, "compute", "float32"))


def compute_of(ctx) -> mx.Dtype:
    """The MLX dtype of the stage's ``compute`` precision: its networks hold their float weights and compute in it."""
    return compute_dtype(getattr(ctx.params, "compute", "float32"))


def _element_counts(path: Path, prefixes: Iterable[str], exclude: Iterable[str] = ()) -> list[int]:
    """Element count of every tensor under ``prefixes`` (less ``exclude``), from the header."""
    prefixes, exclude = tuple(prefixes), tuple(exclude)
    return [math.prod(t.shape) for key, t in cached_header(path).tensors.items()
            if key.startswith(prefixes) and not key.startswith(exclude)]


def weight_bytes(path: Path, prefixes: Iterable[str], exclude: Iterable[str] = (),
                 bytes_per_element: int = COMPUTE_BYTES) -> int:
    """Bytes the tensors under ``prefixes`` (less ``exclude``) take once loaded at the compute precision."""
    return sum(_element_counts(path, prefixes, exclude)) * bytes_per_element


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


def transformer_held(checkpoint: Path, mode, itemsize: int = COMPUTE_BYTES):
    """HeldBytes of the transformer (the checkpoint's ``model.diffusion_model.*`` less the text connectors);
    ``itemsize``: the compute width (a half compute holds every float tensor in it)."""
    st = Path(checkpoint).stat()
    return _transformer_held(str(checkpoint), st.st_size, st.st_mtime_ns, mode, itemsize)


@lru_cache(maxsize=64)
def _transformer_held(checkpoint: str, _size: int, _mtime_ns: int, mode, itemsize: int):
    checkpoint = Path(checkpoint)

    f = converted_part(checkpoint, "transformer")
    if f is not None:
        tensors, packed = converted_tensors(f, "transformer")
        return held_bytes(tensors, mode, packed, itemsize)
    return held_bytes(header_tensors(checkpoint, prefixes=(TRANSFORMER_PREFIX,), exclude=TEXT_CONNECTOR_PREFIXES),
                      mode, itemsize=itemsize)


def gemma_held(gemma: Path, mode, itemsize: int = COMPUTE_BYTES):
    """HeldBytes of Gemma's language model, without its embedding table (read by rows, never held); ``itemsize``:
    the compute width."""
    f = converted_part(Path(gemma), "gemma")
    if f is not None:
        tensors, packed = converted_tensors(f, "gemma", "model.", skip=("embed_tokens.",))
        return held_bytes(tensors, mode, packed, itemsize)
    # imported here, as in blocks_stored_in_bf16: only text-encode (and the planner) sizes Gemma, and the
    # Gemma package (mlx-lm, tokenizers) would lengthen every other stage process's start
    from ltx2.models.text.gemma import weight_plan
    from ltx2.models.text.streaming import EMBED

    _, prefix, per_file = weight_plan(Path(gemma))
    tensors: dict[str, tuple[tuple[int, ...], int]] = {}
    for file, keys in per_file.items():
        tensors.update(header_tensors(Path(file), [k for k in keys if k != prefix + EMBED]))
    return held_bytes(tensors, mode, itemsize=itemsize)


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


# ---------------------------------------------------------------------------------------------------
# The planner's weights-mode candidates for the large networks (text-encode's Gemma, the transformer).

def weights_mode(ctx) -> WeightsMode:
    """The stage's WeightsMode (its ``weights_mode`` parameter, validated with the params)."""
    return WeightsMode.from_params(ctx.params.weights_mode)


def blocks_stored_in_bf16(path: Path, network: str) -> bool:
    """True when every Linear matrix inside the blocks is stored as bf16 (or fp8, which decodes to bf16)."""
    conv = converted_part(path, network)
    if conv is not None:  # a float converted file: its blocks are stored in the part's one float dtype
        return conv.part(network).dtype == "bfloat16"
    if network == "gemma":
        from ltx2.models.text.gemma import weight_plan  # here: see gemma_held

        _, _, per_file = weight_plan(path)
        tensors = [cached_header(Path(f)).tensors[k] for f, keys in per_file.items() for k in keys
                   if block_index(k) is not None]
    else:
        tensors = [t for k, t in cached_header(path).tensors.items() if k.startswith(TRANSFORMER_PREFIX
                                                                                     + "transformer_blocks.")]
    mats = [t for t in tensors if len(t.shape) == 2]
    return bool(mats) and all(t.dtype in ("BF16", "F8_E4M3") for t in mats)


def weights_mode_choices(ctx, network: str) -> list[tuple[dict, str]]:
    """``weights_mode`` candidates in order of preference (models.weights.modes.CANDIDATES): every one for an
    official (or float converted) file; for a quantised converted file only its own precision, resident then
    streamed. ``network``: ``gemma`` (text-encode) or ``transformer`` (read from the checkpoint role). A half
    ``compute`` drops the float32 modes too: the weights are held at the compute width whatever the mode says."""
    path = Path(ctx.weights["gemma" if network == "gemma" else "checkpoint"])
    fixed = file_quantization(path, network)
    if fixed is not None:
        bits, group_size = fixed
        modes = [WeightsMode(f"q{bits}", streaming, group_size) for streaming in (False, True)]
    elif compute_bytes(ctx) < COMPUTE_BYTES or blocks_stored_in_bf16(path, network):
        # float32 would hold the very same values at twice the memory (and, streamed, convert every block on
        # every pass: 5x the read time, benchmarks/transformer_memory.py); a fused LoRA is rounded to bf16
        # once, as the official bf16 pipelines hold it
        modes = [m for m in CANDIDATES if m.precision != "float32"]
    else:
        modes = list(CANDIDATES)
    return [({"weights_mode": m.params()}, m.label) for m in modes]


def stream_bytes_per_pass(ctx, network: str) -> int | None:
    """Block bytes a streamed stage reads per forward pass (a fused LoRA's A and B come with each block);
    None when the stage's weights are resident."""
    mode = weights_mode(ctx)
    if not mode.streaming:
        return None
    held = gemma_held(ctx.weights["gemma"], mode) if network == "gemma" else transformer_held(ctx.weights["checkpoint"], mode)
    per_pass = held.block_stored * len(held.blocks)
    for role, path in ctx.weights.items():
        if role == "distilled_lora" or role.startswith("lora."):
            per_pass += sum(b for _, b in header_tensors(path, prefixes=("",)).values())
    return per_pass
