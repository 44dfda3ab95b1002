"""Converting the official files into per-stage converted files (``ltx2 convert``).

One file at a time, one part at a time, and for the two big networks (the 19B transformer, the 12B
Gemma) one block at a time: the network is first built lazily (never evaluated) and quantised as a
structure, which plans the file's header; then each block's tensors are read from the official file,
LoRAs fused (transformer), renamed to module names, quantised and written, and freed before the next
block. Peak memory is one block in float32 plus its quantised copy, never a whole network. The small
convolutional networks are loaded whole through their own loaders.

Files (``--parts`` names) and the parts they hold:
  transformer.safetensors    transformer            (LoRAs fused; quantised with --bits)
  text.safetensors           gemma, text_embeddings (Gemma only with --gemma; both quantised with --bits)
  video_decoder.safetensors  video_decoder          (float; also holds the latent statistics)
  video_encoder.safetensors  video_encoder          (float; not written unless asked for)
  audio.safetensors          audio_decoder, vocoder (float)
  upsampler.safetensors      upsampler              (float; only with --upsampler)
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from ltx2.artifacts_schema.keys import weight_identity
from ltx2.spec.errors import BadInputError

from ..networks import NETWORKS
from ..text.embeddings import embeddings_build
from ..text.gemma import GEMMA_KEYMAP
from ..transformer.loader import TRANSFORMER_KEYMAP
from .converted import DTYPES, FORMAT, FORMAT_VERSION, ConvertedWriter, dtype_name
from .manifest import MANIFEST
from .quantize import check_quantization, quantize_module
from .safetensors_file import CheckpointError, read_header
from .source import OfficialSource

FILES: dict[str, tuple[str, tuple[str, ...]]] = {
    "transformer": ("transformer.safetensors", ("transformer",)),
    "text": ("text.safetensors", ("gemma", "text_embeddings")),
    "video_decoder": ("video_decoder.safetensors", ("video_decoder",)),
    "video_encoder": ("video_encoder.safetensors", ("video_encoder",)),
    "audio": ("audio.safetensors", ("audio_decoder", "vocoder")),
    "upsampler": ("upsampler.safetensors", ("upsampler",)),
}
DEFAULT_FILES = ("transformer", "text", "video_decoder", "audio", "upsampler")
QUANTIZABLE_PARTS = ("transformer", "gemma", "text_embeddings")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model")


class ConvertError(BadInputError):
    """A conversion that cannot run as asked (the message names the option and the fix)."""


@dataclass
class PartSource:
    """How to plan and fill one part from the official file(s)."""

    part: str
    config: dict  # what the part's network is built from (the official file's config)
    build: dict
    source: dict  # identity of the file(s) read
    source_bytes: int  # bytes of the tensors read, as stored in the source
    source_dtypes: set[str]
    skeleton: Callable[[], nn.Module]  # the float network, built lazily
    fill: Callable[[ConvertedWriter], None]  # put_float every parameter
    loras: list = field(default_factory=list)


def _check_names(expected: dict[str, tuple], got: dict[str, tuple], component: str) -> None:
    """The strict loader's check, on header shapes, before any tensor is read."""
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    bad = [(k, expected[k], got[k]) for k in sorted(set(expected) & set(got)) if tuple(expected[k]) != tuple(got[k])]
    if missing or unexpected or bad:
        lines = [f"{component}: checkpoint does not match the model built from its config"]
        lines += [f"  missing tensor {k} (model expects shape {expected[k]})" for k in missing[:20]]
        lines += [f"  unexpected tensor {k} (checkpoint shape {got[k]})" for k in unexpected[:20]]
        lines += [f"  tensor {k}: model expects shape {e}, checkpoint has {g}" for k, e, g in bad[:20]]
        raise CheckpointError("\n".join(lines))


def _shapes(module: nn.Module) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in tree_flatten(module.parameters())}


def _read_dtype(src: OfficialSource, names, exact_float32: bool = False) -> mx.Dtype | None:
    """Read plain float tensors as stored (put_float upcasts what it quantises: bf16 -> float32 is exact),
    so a group costs its stored size; fp8 ones (dequantised in float32) and LoRA-fused ones in float32."""
    return mx.float32 if exact_float32 or not src.all_float(names) else None


def _stored(src: OfficialSource) -> tuple[int, set[str]]:
    names = src.keys()
    return src.stored_nbytes(names), {src.stored_dtype(n) for n in names}


# --------------------------------------------------------------------------------------------- sources

def _blockwise_source(part: str, src: OfficialSource, blocks: str, identity: dict) -> PartSource:
    """A large network (transformer, Gemma): planned from its header shapes, filled one block at a time."""
    net = NETWORKS[part]
    cfg = src.config()
    src.require_tensors()

    def skeleton() -> nn.Module:
        model = net.build(src)
        _check_names(_shapes(model), src.shapes(), part)
        return model

    def fill(writer: ConvertedWriter) -> None:
        groups, others = src.blocks(blocks)
        for names in [others] + [groups[i] for i in sorted(groups)]:
            w = src.read(names, _read_dtype(src, names, bool(src.loras)))  # the LoRAs fused by the source
            for n, v in w.items():
                writer.put_float(part, n, v)
            del w
            gc.collect()

    nbytes, dtypes = _stored(src)
    loras_meta = [{"file": p.name, "identity": weight_identity(p), "strength": s} for p, s in src.loras]
    return PartSource(part, cfg, {}, identity, nbytes, dtypes, skeleton, fill, loras_meta)


def transformer_source(checkpoint: Path, loras: list[tuple[Path, float]] = ()) -> PartSource:
    # every LoRA pair is checked against the transformer when the source opens, before anything is written
    src = OfficialSource(checkpoint, TRANSFORMER_KEYMAP, loras)
    return _blockwise_source("transformer", src, "transformer_blocks.", {"checkpoint": weight_identity(checkpoint)})


def gemma_source(gemma: Path) -> PartSource:
    src = OfficialSource(Path(gemma), GEMMA_KEYMAP)
    return _blockwise_source("gemma", src, "model.layers.", {"gemma": weight_identity(gemma)})


def _loaded_source(part: str, path: Path, role: str = "checkpoint") -> PartSource:
    """A small network: planned from a lazily built copy, filled by its own loader, whole."""
    net = NETWORKS[part]
    src = OfficialSource(path, net.keymap)
    if not src.keys():
        raise CheckpointError(f"{path}: no tensors for the {part} part (none found)")
    build = embeddings_build(src) if part == "text_embeddings" else {}

    def fill(writer: ConvertedWriter) -> None:
        module = net.load(src)
        writer.put_module(part, module)
        del module
        gc.collect()

    nbytes, dtypes = _stored(src)
    return PartSource(part, src.config(), build, {role: weight_identity(path)}, nbytes, dtypes, lambda: net.build(src),
                      fill)


# --------------------------------------------------------------------------------------------- driver

@dataclass
class FileReport:
    name: str
    parts: list[str]
    source_bytes: int
    bytes: int
    quantized_layers: dict[str, int]
    bits: int | None
    dtype: str


def _storage_dtype(dtype: str, sources: list[PartSource]) -> mx.Dtype:
    if dtype != "auto":
        if dtype not in DTYPES:
            raise ConvertError(f"--dtype {dtype!r}: choose auto, {', '.join(DTYPES)}")
        return DTYPES[dtype]
    tags = set().union(*(s.source_dtypes for s in sources)) & {"F32", "F16", "BF16", "F8_E4M3"}
    if tags == {"F32"}:
        return mx.float32
    if tags == {"F16"}:
        return mx.float16
    return mx.bfloat16  # the official files (bf16, or fp8 whose dequantised values are bf16)


def _role_names(part: str, upsampler_cfg: dict | None) -> list[str]:
    if part == "upsampler":
        temporal = bool((upsampler_cfg or {}).get("temporal_upsample")) and not (upsampler_cfg or {}).get(
            "spatial_upsample")
        return ["temporal_upsampler" if temporal else "spatial_upsampler"]
    if part == "video_decoder":
        return ["video_decoder", "latent_statistics"]
    return [part]


def parse_lora(spec: str) -> tuple[Path, float]:
    """``FILE:STRENGTH`` (or ``FILE``, strength 1)."""
    path, sep, tail = spec.rpartition(":")
    if sep:
        try:
            return Path(path), float(tail)
        except ValueError:
            pass
    return Path(spec), 1.0


def convert_checkpoint(checkpoint: str | Path, out_dir: str | Path, *, gemma: str | Path | None = None,
                       upsampler: str | Path | None = None, loras: list[tuple[str | Path, float]] = (),
                       bits: int | None = None, group_size: int = 64, files: list[str] | None = None,
                       dtype: str = "auto", quantize_embeddings: bool = False, force: bool = False,
                       log: Callable[[str], None] = lambda s: None) -> tuple[dict, list[FileReport]]:
    """Write the converted files into ``out_dir``; returns (manifest, per-file report)."""
    checkpoint = Path(checkpoint)
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise ConvertError(f"--out {out}: exists and is not empty; pick a new folder or pass --force to write over "
                           "the files there")
    if bits is not None:
        if bits not in (4, 8):
            raise ConvertError(f"--bits {bits}: choose 8 or 4 (leave it out for float)")
        try:
            check_quantization(bits, group_size)
        except ValueError as e:
            raise ConvertError(f"--group-size {group_size}: {e}") from None
    wanted = list(files) if files else [f for f in DEFAULT_FILES if f != "upsampler" or upsampler is not None]
    unknown = [f for f in wanted if f not in FILES]
    if unknown:
        raise ConvertError(f"--parts: unknown {unknown}; choose from {', '.join(FILES)}")
    if "upsampler" in wanted and upsampler is None:
        raise ConvertError("--parts upsampler needs --upsampler FILE (the official spatial/temporal upscaler)")
    if loras and "transformer" not in wanted:
        raise ConvertError("--lora fuses into the transformer, but --parts does not include transformer")
    for what, p in (("--checkpoint", checkpoint), ("--gemma", gemma), ("--upsampler", upsampler),
                    *(("--lora", lp) for lp, _ in loras)):
        if p is not None and not Path(p).exists():
            raise ConvertError(f"{what} {p}: no such file or folder")
    header = read_header(checkpoint)
    ckpt_cfg = header.config()
    model_version = header.metadata.get("model_version")
    up_cfg = read_header(upsampler).config() if upsampler is not None else None

    makers: dict[str, Callable[[], PartSource]] = {
        "transformer": lambda: transformer_source(checkpoint, [(Path(p), float(s)) for p, s in loras]),
        "gemma": lambda: gemma_source(Path(gemma)),
        "text_embeddings": lambda: _loaded_source("text_embeddings", checkpoint),
        "video_decoder": lambda: _loaded_source("video_decoder", checkpoint),
        "video_encoder": lambda: _loaded_source("video_encoder", checkpoint),
        "audio_decoder": lambda: _loaded_source("audio_decoder", checkpoint),
        "vocoder": lambda: _loaded_source("vocoder", checkpoint),
        "upsampler": lambda: _loaded_source("upsampler", Path(upsampler), role="upsampler"),
    }
    out.mkdir(parents=True, exist_ok=True)
    reports: list[FileReport] = []
    roles: dict[str, str] = {}
    for fkey in wanted:
        name, parts = FILES[fkey]
        parts = [p for p in parts if p != "gemma" or gemma is not None]
        log(f"converting {name} ({', '.join(parts)})")
        sources = [makers[p]() for p in parts]
        store = _storage_dtype(dtype, sources)
        extra = {}
        if "gemma" in parts:
            extra["gemma_config"] = json.dumps(next(s.config for s in sources if s.part == "gemma"))
        file_cfg = up_cfg if fkey == "upsampler" else ckpt_cfg
        writer = ConvertedWriter(out / name, config=file_cfg, dtype=store,
                                 model_version=None if fkey == "upsampler" else model_version, extra_metadata=extra)
        qcount = {}
        with writer:
            for src in sources:
                skel = src.skeleton()
                if bits is not None and src.part in QUANTIZABLE_PARTS:
                    quantize_module(skel, bits, group_size, quantize_embeddings=quantize_embeddings)
                writer.add_part(src.part, skel, src.config, build=src.build, source=src.source, loras=src.loras)
                qcount[src.part] = writer._parts[src.part]["quantized_layers"]
                del skel
            for src in sources:
                log(f"  {src.part}")
                src.fill(writer)
                gc.collect()
        reports.append(FileReport(name, parts, sum(s.source_bytes for s in sources), (out / name).stat().st_size,
                                  qcount, bits if any(qcount.values()) else None, dtype_name(store)))
        for p in parts:
            for r in _role_names(p, up_cfg):
                roles[r] = name
        if "gemma" in parts:
            _copy_tokenizer(Path(gemma), out)

    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "model_version": model_version,
        "bits": bits, "group_size": group_size if bits is not None else None,
        "quantize_embeddings": bool(quantize_embeddings) if bits is not None else None,
        "sources": {k: {"file": str(Path(v).resolve()), "identity": weight_identity(v)}
                    for k, v in (("checkpoint", checkpoint), ("gemma", gemma), ("upsampler", upsampler))
                    if v is not None},
        "loras": [{"file": str(Path(p).resolve()), "strength": float(s), "identity": weight_identity(p)}
                  for p, s in loras],
        "roles": roles,
        "files": {r.name: {"parts": r.parts, "bytes": r.bytes, "source_bytes": r.source_bytes,
                           "quantized_layers": r.quantized_layers, "bits": r.bits, "dtype": r.dtype}
                  for r in reports},
    }
    _atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    return manifest, reports


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.partial-", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _copy_tokenizer(gemma: Path, out: Path) -> None:
    """The tokenizer files next to text.safetensors: the text encoder looks for them beside a single-file Gemma."""
    folder = gemma if gemma.is_dir() else gemma.parent
    for name in TOKENIZER_FILES:
        src = folder / name
        if src.is_file():
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.partial-", dir=out)
            os.close(fd)
            shutil.copyfile(src, tmp)
            os.chmod(tmp, 0o644)
            os.replace(tmp, out / name)
