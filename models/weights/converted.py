"""The converted-file format written by ``ltx2 convert``: per-stage MLX weight files, optionally quantised.

A converted file is an ordinary safetensors file holding one or more *parts* (a part is one network:
``transformer``, ``gemma``, ``text_embeddings``, ``video_decoder``, ``video_encoder``,
``audio_decoder``, ``vocoder``, ``upsampler``). Each part's tensors carry the MODULE parameter names
(the key map already applied, MLX layouts: nothing to rename or transpose on load) under the part's key prefix.
The prefixes are the official component prefixes (``model.diffusion_model.``, ``vae.decoder.``, ...),
so header-only tools that sum a component's bytes by prefix attribute them correctly. A quantised
Linear is stored as MLX holds it: ``<layer>.weight`` (uint32, packed), ``<layer>.scales`` and
``<layer>.biases``; a layer is quantised on load exactly when its ``.scales`` tensor is present.

Metadata (``__metadata__``, all strings):
  format            "ltx2.converted"           format_version  "1"
  config            the source file's own config JSON (the checkpoint's, or the upsampler's), so code that
                    reads the model's config from a header (latent layout, memory estimates) keeps working
  model_version     the source checkpoint's, when it has one
  gemma_config      (files holding Gemma) its config.json, where Gemma tooling looks for a single-file config
  parts             JSON {part: {prefix, config, build, bits, group_size, quantized_layers, dtype, source,
                    loras}}: ``config`` (+ ``build``: shapes the config does not state) is what the part's
                    network is built from; ``bits`` / ``group_size`` null when nothing is quantised;
                    ``source`` the identity (size + header sha256) of the file(s) it came from; ``loras``
                    the LoRAs fused into it: [{file, identity, strength}]

Network loaders read a converted file through ``ConvertedSource`` (models/weights/source.py, picked by
``open_source`` from the ``format`` metadata), so a stage can be pointed at converted files unchanged.
Files are written through :class:`ConvertedWriter`: tensor by tensor into a temporary file whose header
is planned up front (so a 19B model can be converted one block at a time), renamed into place only when
every planned tensor was written.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

from .manifest import FORMAT
from .quantize import check_quantization, quantize_module, quantized_layers
from .safetensors_file import CheckpointError, SafetensorsHeader, read_header

FORMAT_VERSION = "1"

# part -> key prefix inside a converted file
PART_PREFIXES = {
    "transformer": "model.diffusion_model.",
    "gemma": "language_model.",  # + GemmaEncoder names "model.*": the original google/gemma-3 LM prefix
    "text_embeddings": "text_embeddings.",
    "video_encoder": "vae.encoder.",
    "video_decoder": "vae.decoder.",
    "audio_decoder": "audio_vae.decoder.",
    "vocoder": "vocoder.",
    "upsampler": "",  # an upsampler file holds nothing else, as the official one
}

_TAGS = {mx.float32: "F32", mx.float16: "F16", mx.bfloat16: "BF16", mx.uint32: "U32", mx.int32: "I32",
         mx.uint8: "U8", mx.int64: "I64"}
_NUMPY = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "U32": np.uint32, "I32": np.int32,
          "U8": np.uint8, "I64": np.int64}
_ITEMSIZE = {"F32": 4, "F16": 2, "BF16": 2, "U32": 4, "I32": 4, "U8": 1, "I64": 8}
DTYPES = {"float32": mx.float32, "bfloat16": mx.bfloat16, "float16": mx.float16}


def dtype_name(dtype: mx.Dtype) -> str:
    for k, v in DTYPES.items():
        if v == dtype:
            return k
    raise ValueError(f"{dtype}: converted files store float32, bfloat16 or float16")


# ------------------------------------------------------------------------------------------------ reading

@dataclass(frozen=True)
class PartInfo:
    name: str
    prefix: str
    config: dict
    build: dict
    bits: int | None
    group_size: int | None
    quantized_layers: int
    dtype: str
    source: dict
    loras: list = field(default_factory=list)


@dataclass(frozen=True)
class ConvertedFile:
    header: SafetensorsHeader
    config: dict
    model_version: str | None
    parts: dict[str, PartInfo]

    @property
    def path(self) -> Path:
        return self.header.path

    def part(self, name: str | None) -> PartInfo:
        if name is None:
            if len(self.parts) != 1:
                raise CheckpointError(f"{self.path}: holds parts {sorted(self.parts)}; say which one to load")
            return next(iter(self.parts.values()))
        if name not in self.parts:
            raise CheckpointError(f"{self.path}: this converted file holds {sorted(self.parts)}, not {name!r}; "
                                  f"convert the {name} part (ltx2 convert --parts ...) or point at the file that "
                                  "holds it")
        return self.parts[name]

    def keys(self, part: str, prefix: str = "") -> list[str]:
        """File keys of ``part`` whose module name starts with ``prefix``."""
        p = self.part(part).prefix + prefix
        return [k for k in self.header.tensors if k.startswith(p)]

    def names(self, part: str) -> list[str]:
        """Module parameter names of ``part``."""
        n = len(self.part(part).prefix)
        return [k[n:] for k in self.keys(part)]

    def tensors(self, part: str, prefix: str = "", dtype: mx.Dtype | None = mx.float32) -> dict[str, mx.array]:
        """``part``'s tensors (optionally only module names under ``prefix``, e.g. ``transformer_blocks.3.``,
        for per-block streaming), keyed by module name; float tensors cast to ``dtype`` (None: as stored),
        packed quantised weights kept uint32."""
        n = len(self.part(part).prefix)
        return {k[n:]: v for k, v in read_tensors(self.header, self.keys(part, prefix), dtype).items()}

    def nbytes(self, part: str | None = None, dtype: mx.Dtype | None = mx.float32) -> int:
        """Bytes ``part`` (None: every part) takes once loaded with float tensors at ``dtype``."""
        parts = [self.part(part)] if part is not None else list(self.parts.values())
        total = 0
        for p in parts:
            for k in self.keys(p.name):
                t = self.header.tensors[k]
                if t.dtype in ("F32", "F16", "BF16") and dtype is not None:
                    total += t.nbytes // _ITEMSIZE[t.dtype] * dtype.size
                else:
                    total += t.nbytes
        return total


def is_converted(path: str | Path) -> bool:
    """True for a file written by ``ltx2 convert`` (a folder, or any other file, is not)."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        return read_header(path).metadata.get("format") == FORMAT
    except CheckpointError:
        return False


def open_converted(path: str | Path) -> ConvertedFile:
    return converted_file(read_header(path))


def converted_file(header: SafetensorsHeader) -> ConvertedFile:
    """The converted file whose header was read (its metadata checked)."""
    meta = header.metadata
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{header.path}: not a converted ltx2 weight file (no format={FORMAT!r} metadata)")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{header.path}: converted-file format version {meta.get('format_version')!r}; this "
                              f"ltx2 reads version {FORMAT_VERSION}: convert the official files again")
    try:
        parts = {name: PartInfo(name=name, **info) for name, info in json.loads(meta["parts"]).items()}
        config = json.loads(meta.get("config", "{}"))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{header.path}: damaged converted-file metadata ({e})") from e
    return ConvertedFile(header, config, meta.get("model_version"), parts)


def read_tensors(header: SafetensorsHeader, keys: list[str], dtype: mx.Dtype | None) -> dict[str, mx.array]:
    """``keys`` of a converted file (float tensors cast to ``dtype``; None: as stored), keyed as in the file."""
    size = header.size
    cut = [k for k in keys if header.tensors[k].end > size]
    if cut:
        raise CheckpointError(f"{header.path}: tensor {cut[0]!r} lies past the end of the file ({size} bytes): "
                              "the file is truncated; convert again")
    mm = np.memmap(header.path, dtype=np.uint8, mode="r") if keys else None
    out = {}
    for k in keys:
        info = header.tensors[k]
        if info.dtype not in _NUMPY:
            raise CheckpointError(f"{header.path}: tensor {k!r} has dtype {info.dtype}, not one a converted file holds")
        raw = np.array(np.frombuffer(mm[info.begin:info.end], dtype=_NUMPY[info.dtype]).reshape(info.shape))
        arr = mx.array(raw)
        if info.dtype == "BF16":
            arr = arr.view(mx.bfloat16)
        if dtype is not None and info.dtype in ("F32", "F16", "BF16") and arr.dtype != dtype:
            arr = arr.astype(dtype)
        out[k] = arr
    del mm
    return out


# ------------------------------------------------------------------------------------------------ loading

def quantize_like(module: nn.Module, names: Iterable[str], bits: int | None, group_size: int | None) -> set[str]:
    """Quantise (structure only) exactly the layers whose ``<layer>.scales`` is in ``names``; returns them."""
    wanted = {n[: -len(".scales")] for n in names if n.endswith(".scales")}
    if not wanted:
        return wanted
    if bits is None or group_size is None:
        raise CheckpointError("converted file: quantised tensors but no bits / group_size in its metadata")
    check_quantization(bits, group_size)
    nn.quantize(module, group_size=group_size, bits=bits, class_predicate=lambda p, m: p in wanted)
    return wanted


def _identity(path: str | Path) -> dict:
    # lazy: the artifacts_schema package loads zarr, which `weights check` and job validation (this module is
    # on their import path, through the loaders) do not otherwise need
    from ltx2.artifacts_schema.keys import weight_identity

    return weight_identity(path)


def already_fused(info: PartInfo, lora_path, strength: float) -> bool:
    """Whether the LoRA file at ``lora_path`` was fused with ``strength`` into ``info``'s part at conversion."""
    ident = _identity(lora_path)
    return any(rec.get("identity") == ident and float(rec.get("strength")) == float(strength) for rec in info.loras)


# ------------------------------------------------------------------------------------------------ writing

@dataclass
class _Planned:
    key: str
    tag: str
    shape: tuple[int, ...]
    begin: int = 0
    end: int = 0


class ConvertedWriter:
    """Writes a converted file tensor by tensor.

    ``add_part`` each part first with its network (may be built lazily and never evaluated: only its
    structure is read, quantised or not), then ``put`` / ``put_float`` every parameter in any order, then
    ``close``; used as a context manager, an exception discards the temporary file. Float tensors are
    stored in ``dtype``; a weight given to ``put_float`` for a layer the network holds quantised is
    quantised here with that layer's bits and group size: ``mx.quantize`` (what ``nn.quantize`` calls) on
    the weight in float32, so scales and biases are float32 and stored so, whatever ``dtype``. That costs
    1/16 (8-bit) or 1/8 (4-bit) more than bf16 scales, and buys a lower error (bf16-rounded biases shift
    whole groups: at 8 bits that adds ~35% to the error of a matmul) and the same numbers as quantising
    the official weights in memory (``weights_mode`` q8 / q4, models/weights/modes.py).
    """

    def __init__(self, path: str | Path, *, config: dict, dtype: mx.Dtype = mx.bfloat16,
                 model_version: str | None = None, extra_metadata: dict[str, str] | None = None):
        self.path = Path(path)
        self.dtype = dtype
        self._meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": json.dumps(config)}
        if model_version is not None:
            self._meta["model_version"] = str(model_version)
        self._meta.update(extra_metadata or {})
        self._parts: dict[str, dict] = {}
        self._plan: dict[str, _Planned] = {}
        self._quantized: dict[str, dict[str, tuple[int, int]]] = {}
        self._written: set[str] = set()
        self._file = None
        self._tmp: Path | None = None

    # -- planning
    def add_part(self, part: str, module: nn.Module, config: dict, *, build: dict | None = None,
                 source: dict | None = None, loras: list | None = None, prefix: str | None = None) -> None:
        if self._file is not None:
            raise RuntimeError("add every part before writing tensors")
        if part in self._parts:
            raise ValueError(f"part {part!r} added twice")
        prefix = PART_PREFIXES.get(part, f"{part}.") if prefix is None else prefix
        q = quantized_layers(module)
        combos = set(q.values())
        if len(combos) > 1:
            raise ValueError(f"{part}: layers quantised with different settings {sorted(combos)}; one per part")
        bits, group_size = next(iter(combos)) if combos else (None, None)
        for name, v in tree_flatten(module.parameters()):
            key = prefix + name
            if key in self._plan:
                raise ValueError(f"{key}: planned twice (overlapping part prefixes?)")
            layer, _, leaf = name.rpartition(".")
            if layer in q and leaf in ("scales", "biases"):
                tag = "F32"  # see put_float
            elif mx.issubdtype(v.dtype, mx.floating):
                tag = _TAGS[self.dtype]
            elif v.dtype in _TAGS:
                tag = _TAGS[v.dtype]
            else:
                raise ValueError(f"{key}: dtype {v.dtype} cannot be stored")
            self._plan[key] = _Planned(key, tag, tuple(v.shape))
        self._quantized[part] = q
        self._parts[part] = {"prefix": prefix, "config": config, "build": build or {}, "bits": bits,
                             "group_size": group_size, "quantized_layers": len(q), "dtype": dtype_name(self.dtype),
                             "source": source or {}, "loras": loras or []}

    def _begin(self) -> None:
        offset = 0
        header: dict = {}
        for p in self._plan.values():
            p.begin = offset
            p.end = offset + _ITEMSIZE[p.tag] * int(np.prod(p.shape, dtype=np.int64))
            offset = p.end
            header[p.key] = {"dtype": p.tag, "shape": list(p.shape), "data_offsets": [p.begin, p.end]}
        meta = dict(self._meta, parts=json.dumps(self._parts))
        raw = json.dumps({"__metadata__": meta, **header}, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # keep the data 8-byte aligned, as safetensors does
        self._data_start = 8 + len(raw)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.partial-", dir=self.path.parent)
        self._tmp = Path(tmp)
        self._file = os.fdopen(fd, "wb")
        self._file.write(struct.pack("<Q", len(raw)) + raw)
        self._file.truncate(self._data_start + offset)

    # -- writing
    def put(self, part: str, name: str, value: mx.array) -> None:
        """One parameter, exactly as the planned network holds it (module name within ``part``)."""
        key = self._parts[part]["prefix"] + name
        p = self._plan.get(key)
        if p is None:
            raise KeyError(f"{part}: {name!r} is not a parameter of the planned network")
        if tuple(value.shape) != p.shape:
            raise ValueError(f"{part}: {name}: planned shape {p.shape}, got {tuple(value.shape)}")
        if p.tag in ("F32", "F16", "BF16"):
            if not mx.issubdtype(value.dtype, mx.floating):
                raise ValueError(f"{part}: {name}: float expected, got {value.dtype}")
            value = value.astype({"F32": mx.float32, "F16": mx.float16, "BF16": mx.bfloat16}[p.tag])
        elif _TAGS.get(value.dtype) != p.tag:
            raise ValueError(f"{part}: {name}: planned {p.tag}, got {value.dtype}")
        if self._file is None:
            self._begin()
        if value.dtype == mx.bfloat16:
            value = value.view(mx.uint16)
        data = np.ascontiguousarray(np.asarray(value))  # evaluates; copies only a strided view
        if data.nbytes != p.end - p.begin:
            raise AssertionError(f"{key}: {data.nbytes} bytes for a planned {p.end - p.begin}")
        self._file.seek(self._data_start + p.begin)
        self._file.write(memoryview(data).cast("B"))
        self._written.add(key)

    def put_float(self, part: str, name: str, value: mx.array) -> None:
        """A float parameter in module naming; a weight of a planned-quantised layer is quantised here."""
        layer = name[: -len(".weight")] if name.endswith(".weight") else None
        q = self._quantized[part].get(layer) if layer is not None else None
        if q is None:
            self.put(part, name, value)
            return
        bits, group_size = q
        wq, scales, biases = mx.quantize(value.astype(mx.float32), group_size, bits)
        self.put(part, name, wq)
        self.put(part, layer + ".scales", scales)
        self.put(part, layer + ".biases", biases)

    def put_module(self, part: str, module: nn.Module) -> None:
        """Every parameter of a loaded float network (``put_float`` each)."""
        for name, v in tree_flatten(module.parameters()):
            self.put_float(part, name, v)

    def close(self) -> Path:
        if self._file is None:
            self._begin()
        missing = [k for k in self._plan if k not in self._written]
        if missing:
            self.abort()
            raise CheckpointError(f"{self.path}: {len(missing)} planned tensor(s) never written, e.g. {missing[:5]}")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.chmod(self._tmp, 0o644)
        os.replace(self._tmp, self.path)
        self._file = None
        return self.path

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tmp is not None and self._tmp.exists():
            self._tmp.unlink()

    def __enter__(self) -> "ConvertedWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif self._file is not None or self._tmp is None:
            self.close()


def save_converted(path: str | Path, module: nn.Module, config: dict, *, part: str,
                   bits: int | None = None, group_size: int = 64, dtype: mx.Dtype = mx.bfloat16,
                   build: dict | None = None, source: dict | None = None, loras: list | None = None,
                   model_version: str | None = None, file_config: dict | None = None,
                   quantize_embeddings: bool = False) -> Path:
    """Write one loaded network as a one-part converted file. ``config`` (+ ``build``) must rebuild it
    with the part's network (models/networks.py); ``file_config`` (default ``config``) goes to the file's
    ``config`` metadata.

    ``bits``: the network (float) is quantised by the policy of :mod:`.quantize`, in place, as
    ``quantize_module`` does, and the file holds the same quantisation (from its weights in float32;
    float tensors stored in ``dtype``). Without ``bits`` a network that is already quantised is written
    as it is (its scales and biases as float32).
    """
    floats = dict(tree_flatten(module.parameters()))
    if bits is not None:
        quantize_module(module, bits, group_size, quantize_embeddings=quantize_embeddings)
    w = ConvertedWriter(path, config=file_config if file_config is not None else config, dtype=dtype,
                        model_version=model_version)
    with w:
        w.add_part(part, module, config, build=build, source=source, loras=loras)
        if bits is not None:
            for name, v in floats.items():
                w.put_float(part, name, v)
        else:
            for name, v in floats.items():
                w.put(part, name, v)
    return Path(path)
