"""Where a network's weights come from: one interface over the official files and ``ltx2 convert`` output.

A :class:`WeightSource` holds one network's tensors (its :class:`~.keymap.KeyMap` says which) and hands
them out in MODULE naming and MLX layouts, whatever file holds them:

- :class:`OfficialSource`: the official single-file checkpoint, an upsampler file, a single-file
  Gemma, or a Hugging Face folder (``config.json`` + shards, read through its index). Tensors are renamed
  and re-laid-out by the key map; fp8 (E4M3) tensors are dequantised on read (safetensors_file.py).
- :class:`ConvertedSource`: a file written by ``ltx2 convert`` (models/weights/converted.py): module names
  and MLX layouts already, possibly affine-quantised (``quantization()``), the LoRAs recorded as fused
  at conversion never fused twice.

Both fuse LoRAs (``W += strength * B @ A``, in float32, into module-named tensors; a quantised weight
is dequantised, adapted and quantised again) in one place, on every read, so the resident, streamed
and converted paths see the same weights. :func:`open_source` picks the kind from the file.
Loaders take a source (or a path, which they open): no loader asks what kind of file it was given.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from .converted import FORMAT, ConvertedFile, already_fused, converted_file, quantize_like, read_tensors
from .keymap import KeyMap
from .lora import LoraPlan, apply_lora, plan_lora
from .prefetch import Range, tensor_ranges
from .safetensors_file import CheckpointError, SafetensorsHeader, load_tensors, read_header, require_complete
from .strict import load_strict

COMPUTE_BYTES = 4  # float32 compute
FLOAT_TAGS = ("F32", "F16", "BF16")
_ROWS_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "U32": np.uint32}


def cast_each(tensors: dict[str, mx.array], dtype: mx.Dtype) -> dict[str, mx.array]:
    """Cast the float tensors to ``dtype`` in place, evaluating one at a time: a lazy cast of every tensor
    would keep all the stored (bf16) copies alive until the end, half as much again as a block."""
    for k, v in tensors.items():
        if mx.issubdtype(v.dtype, mx.floating) and v.dtype != dtype:
            tensors[k] = v.astype(dtype)
            mx.eval(tensors[k])
    return tensors


class WeightSource(ABC):
    """One network's tensors in module naming (see the module docstring)."""

    path: Path
    keymap: KeyMap
    stores_mlx_layout: bool  # tensors already in MLX layout: convolutions use them without a copy
    label: str = ""  # appended to strict-loading messages

    def __init__(self, loras: Iterable[tuple[str | Path, float]] = ()):
        self.loras = [(Path(p), float(s)) for p, s in loras]
        self._lora_plan: list[LoraPlan] = []
        self._shapes: dict[str, tuple[int, ...]] | None = None

    # ---------------------------------------------------------------- what it holds
    @abstractmethod
    def keys(self) -> list[str]:
        """Module names of every tensor, in file order."""

    @abstractmethod
    def config(self) -> dict:
        """The config the network is built from (the official file's own JSON config)."""

    @abstractmethod
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Module name -> shape in the module's layout, as a float tensor (a packed weight's unpacked shape)."""

    @abstractmethod
    def stored_dtype(self, name: str) -> str:
        """The safetensors dtype tag ``name`` is stored with (``U32``: a packed quantised weight)."""

    @abstractmethod
    def stored_nbytes(self, names: Iterable[str]) -> int:
        """Bytes ``names`` take in the file (what a read of them costs)."""

    @abstractmethod
    def ranges(self, names: Iterable[str]) -> list[Range]:
        """(file, begin, end) of ``names``' bytes, for the prefetcher."""

    @abstractmethod
    def rows(self, name: str, ids: np.ndarray) -> mx.array:
        """Rows ``ids`` (any shape) of the 2-D table ``name``, float32, read without the rest of the table."""

    @abstractmethod
    def _read(self, names: list[str], dtype: mx.Dtype | None) -> dict[str, mx.array]:
        """``names`` read (floats cast to ``dtype``; None: as stored), module-named, before any LoRA."""

    def require_tensors(self) -> None:
        """Refuse a file that holds none of the network's body (e.g. the wrong file for this network)."""

    def quantization(self) -> tuple[int, int] | None:
        """(bits, group_size) when the file holds the network's block matrices affine-quantised."""
        return None

    def conv_copy_bytes(self, bytes_per_element: int = COMPUTE_BYTES) -> int:
        """The contiguous copy MLX's CPU convolution makes of a weight in a non-MLX layout, per call: the
        largest tensor, at the compute precision (none when the file already stores MLX's layout). Measured:
        108 MiB of the full-size upscale's peak, the copy of a 1024x1024x3x3x3 weight."""
        if self.stores_mlx_layout:
            return 0
        return max((math.prod(s) for s in self.shapes().values()), default=0) * bytes_per_element

    def missing(self, names: Iterable[str]) -> list[str]:
        """The ``names`` the source does not hold, as the file would call them."""
        held = set(self.keys())
        return [self.file_key(n) for n in names if n not in held]

    def file_key(self, name: str) -> str:
        """What the file calls module tensor ``name`` (for messages)."""
        return name

    def blocks(self, prefix: str) -> tuple[dict[int, list[str]], list[str]]:
        """Names under ``<prefix><i>.`` grouped by block ``i``, and every other name."""
        groups: dict[int, list[str]] = {}
        others: list[str] = []
        for name in self.keys():
            head, dot, _ = name[len(prefix):].partition(".")
            if name.startswith(prefix) and dot and head.isdigit():
                groups.setdefault(int(head), []).append(name)
            else:
                others.append(name)
        return groups, others

    def all_float(self, names: Iterable[str]) -> bool:
        return all(self.stored_dtype(n) in FLOAT_TAGS for n in names)

    # ---------------------------------------------------------------- reading
    def read(self, names: Sequence[str], dtype: mx.Dtype | None = mx.float32, *,
             stepwise: bool = False) -> dict[str, mx.array]:
        """``names`` as module tensors, fp8 dequantised, with the LoRAs fused in.

        ``dtype``: float tensors cast to it (None: as stored; fp8 decodes to bf16). ``stepwise``: read as
        stored, then cast one tensor at a time (see :func:`cast_each`): bounds the transient for a block
        of a large network; an fp8 weight then passes through bf16 on its way, as when read as stored."""
        names = list(names)
        if stepwise:
            out = self._read(names, None)
            if dtype is not None:
                cast_each(out, dtype)
        else:
            out = self._read(names, dtype)
        return self._fuse(out) if self._lora_plan else out

    def read_under(self, prefix: str, dtype: mx.Dtype | None = mx.float32, *, exclude: tuple[str, ...] = (),
                   stepwise: bool = False) -> dict[str, mx.array]:
        """Every tensor under module prefix ``prefix`` (less ``exclude``, relative to it), names relative to it."""
        names = [n for n in self.keys() if n.startswith(prefix) and not n[len(prefix):].startswith(exclude)]
        return {n[len(prefix):]: v for n, v in self.read(names, dtype, stepwise=stepwise).items()}

    def load_into(self, module: nn.Module, what: str, dtype: mx.Dtype | None = mx.float32, *, prefix: str = "",
                  exclude: tuple[str, ...] = (), weights: dict[str, mx.array] | None = None) -> nn.Module:
        """Load the tensors under ``prefix`` (less ``exclude``) into ``module`` strictly, its layers quantised
        as the file holds them. ``weights``: those tensors already read (e.g. then held in another dtype)."""
        if weights is None:
            weights = self.read_under(prefix, dtype, exclude=exclude)
        q = self.quantization()
        if q is not None:
            quantize_like(module, weights, *q)
        return load_strict(module, weights, what + self.label)

    # ---------------------------------------------------------------- LoRA
    def _plan_loras(self) -> None:
        """Check every LoRA against the network once (before any block is read) and plan its fusion."""
        if not self.loras:
            return
        km = self.keymap
        if km.lora_root is None:
            raise CheckpointError(f"LoRAs can only be fused into the transformer, not the {km.network}")

        def name_of(target: str) -> str | None:
            key = km.lora_root + target
            # not owned: another network's (the text connectors under the transformer's prefix): not fused here
            return km.module_name(key) if km.owns(key) else None

        shapes = self.shapes()
        self._lora_plan = [plan_lora(path, strength, shapes, name_of) for path, strength in self.loras]

    def _fuse(self, tensors: dict[str, mx.array]) -> dict[str, mx.array]:
        """The planned LoRAs fused, in order, into those of ``tensors`` they adapt."""
        for plan in self._lora_plan:
            apply_lora(tensors, plan, self.quantization())
        return tensors


# ---------------------------------------------------------------------------------------------- official

class OfficialSource(WeightSource):
    """A network in the official files: a single safetensors file, or a folder of shards with config.json."""

    stores_mlx_layout = False

    def __init__(self, path: str | Path, keymap: KeyMap, loras: Iterable[tuple[str | Path, float]] = (), *,
                 header: SafetensorsHeader | None = None):
        super().__init__(loras)
        self.path = Path(path)
        if self.path.is_dir():
            self._config, self.keymap, self.headers, where = _folder(self.path, keymap)
        else:
            h = header or read_header(self.path)
            self.keymap = keymap.bind(h.tensors, str(h.path))
            self._config = None
            self.headers = {str(h.path): h}
            where = [(str(h.path), k) for k in h.tensors]
        self._where: dict[str, tuple[str, str]] = {}  # module name -> (file, checkpoint key)
        for file, key in where:
            if self.keymap.owns(key):
                self._where[self.keymap.module_name(key)] = (file, key)
        self._plan_loras()

    @property
    def header(self) -> SafetensorsHeader:
        """The (single) file's header."""
        return next(iter(self.headers.values()))

    def keys(self) -> list[str]:
        return list(self._where)

    def require_tensors(self) -> None:
        body = self.keymap.roots[0]
        if not any(body.owns(key) for _, key in self._where.values()):
            raise CheckpointError(f"{self.path}: no tensors under {body.checkpoint!r}; is this {self.keymap.describe}?")

    def plan(self) -> dict[str, list[str]]:
        """{file: the checkpoint keys of the network it holds}."""
        out: dict[str, list[str]] = {}
        for file, key in self._where.values():
            out.setdefault(file, []).append(key)
        return out

    def file_key(self, name: str) -> str:
        return self._where[name][1] if name in self._where else self.keymap.checkpoint_key(name)

    def config(self) -> dict:
        if self._config is not None:
            return self._config
        meta = self.header.metadata
        if self.keymap.config_keys == ("config",):
            return self.header.config()
        for k in self.keymap.config_keys:
            if meta.get(k) is not None:
                return json.loads(meta[k])
        raise CheckpointError(f"{self.path}: a single-file {self.keymap.network} needs its config in the safetensors "
                              f"metadata ({self.keymap.config_keys[0]!r}); or pass its folder with config.json")

    def _info(self, name: str):
        file, key = self._where[name]
        return self.headers[file], key

    def shapes(self) -> dict[str, tuple[int, ...]]:
        if self._shapes is None:
            self._shapes = {}
            for name in self._where:
                header, key = self._info(name)
                self._shapes[name] = self.keymap.module_shape(name, header.tensors[key].shape)
        return dict(self._shapes)

    def stored_dtype(self, name: str) -> str:
        header, key = self._info(name)
        return header.tensors[key].dtype

    def stored_nbytes(self, names: Iterable[str]) -> int:
        return sum(h.tensors[k].nbytes for h, k in map(self._info, names))

    def ranges(self, names: Iterable[str]) -> list[Range]:
        out: list[Range] = []
        for name in names:
            header, key = self._info(name)
            out += tensor_ranges(header.path, header, [key])
        return out

    def _read(self, names: list[str], dtype: mx.Dtype | None) -> dict[str, mx.array]:
        per_file: dict[str, list[str]] = {}
        for n in names:
            file, key = self._where[n]
            per_file.setdefault(file, []).append(key)
        raw: dict[str, mx.array] = {}
        for file, keys in per_file.items():
            raw.update(load_tensors(self.headers[file], keys, dtype))
        return self.keymap.to_module(raw)

    def rows(self, name: str, ids: np.ndarray) -> mx.array:
        header, key = self._info(name)
        info = header.tensors[key]
        require_complete(header, key, info)
        _check_ids(ids, info.shape[0])
        if info.dtype not in _ROWS_DTYPES:  # an exotic dtype (fp8): read the whole table once, decoded as any tensor
            return self._read([name], mx.float32)[name][mx.array(ids)]
        return _rows(header, key, ids).astype(mx.float32).reshape(*ids.shape, info.shape[1])


def _folder(path: Path, keymap: KeyMap) -> tuple[dict, KeyMap, dict[str, SafetensorsHeader], list[tuple[str, str]]]:
    """(config, key map bound to the folder, headers of the shards holding the network, [(file, key)]) of a
    Hugging Face folder; shards
    that hold none of the network's tensors are never opened."""
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise CheckpointError(f"{path}: no config.json in the folder")
    cfg = json.loads(cfg_path.read_text())
    index = path / "model.safetensors.index.json"
    if index.is_file():
        weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
    else:
        files = sorted(path.glob("*.safetensors"))
        if not files:
            raise CheckpointError(f"{path}: no *.safetensors files and no model.safetensors.index.json")
        weight_map = {k: f.name for f in files for k in read_header(f).tensors}
    bound = keymap.bind(weight_map, str(path))
    where = [(str(path / f), k) for k, f in weight_map.items() if bound.owns(k)]
    headers = {f: read_header(f) for f in dict.fromkeys(f for f, _ in where)}
    # the index names an fp8 weight's scales too; the header folds them into the weight they scale
    where = [(f, k) for f, k in where if k in headers[f].tensors]
    return cfg, bound, headers, where


# ---------------------------------------------------------------------------------------------- converted

class ConvertedSource(WeightSource):
    """A network in a file written by ``ltx2 convert``: module names, MLX layouts, maybe quantised."""

    stores_mlx_layout = True

    def __init__(self, file: ConvertedFile, keymap: KeyMap, loras: Iterable[tuple[str | Path, float]] = ()):
        part = next((p for p in keymap.parts if p in file.parts), None)
        if part is None and len(keymap.parts) > 1:
            raise CheckpointError(f"{file.path}: this converted file holds {sorted(file.parts)}; the {keymap.network} "
                                  f"are in the converted {keymap.parts[0]} file ({keymap.parts[0]}.safetensors)")
        self.file = file
        self.info = file.part(part or keymap.parts[0])
        self.path = file.path
        self.keymap = keymap
        self.label = f" (converted file {file.path.name})"
        n = len(self.info.prefix)
        self._names = {k[n:]: k for k in file.keys(self.info.name) if keymap.owns_name(k[n:])}
        super().__init__([(p, s) for p, s in loras if not already_fused(self.info, p, s)])  # fused at conversion
        self._plan_loras()

    def keys(self) -> list[str]:
        return list(self._names)

    def config(self) -> dict:
        return self.info.config

    def quantization(self) -> tuple[int, int] | None:
        return (self.info.bits, self.info.group_size) if self.info.bits else None

    def _tensor(self, name: str):
        return self.file.header.tensors[self._names[name]]

    def shapes(self) -> dict[str, tuple[int, ...]]:
        if self._shapes is not None:
            return dict(self._shapes)
        out = self._shapes = {}
        for name, key in self._names.items():
            t = self.file.header.tensors[key]
            shape = tuple(t.shape)
            if t.dtype == "U32" and name.endswith(".weight") and name[:-len("weight")] + "scales" in self._names:
                shape = shape[:-1] + (shape[-1] * 32 // self.info.bits,)
            out[name] = shape
        return dict(out)

    def stored_dtype(self, name: str) -> str:
        return self._tensor(name).dtype

    def stored_nbytes(self, names: Iterable[str]) -> int:
        return sum(self._tensor(n).nbytes for n in names)

    def ranges(self, names: Iterable[str]) -> list[Range]:
        return tensor_ranges(self.path, self.file.header, [self._names[n] for n in names])

    def _read(self, names: list[str], dtype: mx.Dtype | None) -> dict[str, mx.array]:
        raw = read_tensors(self.file.header, [self._names[n] for n in names], dtype)
        n = len(self.info.prefix)
        return {k[n:]: v for k, v in raw.items()}

    def rows(self, name: str, ids: np.ndarray) -> mx.array:
        header, key = self.file.header, self._names[name]
        info = header.tensors[key]
        require_complete(header, key, info)
        _check_ids(ids, info.shape[0])
        if info.dtype == "U32":  # a quantised table: dequantise just these rows
            stem = key[: -len(".weight")]
            w, sc, bi = (_rows(header, k, ids) for k in (key, stem + ".scales", stem + ".biases"))
            rows = mx.dequantize(w, sc, bi, group_size=self.info.group_size, bits=self.info.bits)
            return rows.astype(mx.float32).reshape(*ids.shape, -1)
        if info.dtype not in _ROWS_DTYPES:
            return self._read([name], mx.float32)[name][mx.array(ids)]
        return _rows(header, key, ids).astype(mx.float32).reshape(*ids.shape, info.shape[1])


def _check_ids(ids: np.ndarray, n: int) -> None:
    if ids.size and (ids.min() < 0 or ids.max() >= n):
        raise ValueError(f"token id out of range for an embedding of {n} rows")


def _rows(header: SafetensorsHeader, key: str, ids: np.ndarray) -> mx.array:
    """Rows ``ids`` of a 2-D tensor, read through a memory map (only those rows are copied out)."""
    info = header.tensors[key]
    require_complete(header, key, info)
    mm = np.memmap(header.path, dtype=np.uint8, mode="r")
    table = mm[info.begin:info.end].view(_ROWS_DTYPES[info.dtype]).reshape(info.shape)
    rows = np.array(table[ids.reshape(-1)])
    del table, mm
    arr = mx.array(rows)
    return arr.view(mx.bfloat16) if info.dtype == "BF16" else arr


# ---------------------------------------------------------------------------------------------- opening

def open_source(path: str | Path | WeightSource, keymap: KeyMap,
                loras: Iterable[tuple[str | Path, float]] = ()) -> WeightSource:
    """The network ``keymap`` describes, in the file or folder at ``path``: a converted file (its
    ``format`` metadata says so) or the official layout. A source passed in is returned as it is."""
    loras = list(loras)
    if isinstance(path, WeightSource):
        if path.keymap.network != keymap.network:
            raise CheckpointError(f"{path.path}: a {path.keymap.network} source was given where the "
                                  f"{keymap.network} is loaded")
        if loras:
            raise ValueError("give the LoRAs to open_source, with the file")
        return path
    path = Path(path)
    if path.is_dir():
        return OfficialSource(path, keymap, loras)
    header = read_header(path)
    if header.metadata.get("format") == FORMAT:
        return ConvertedSource(converted_file(header), keymap, loras)
    return OfficialSource(path, keymap, loras, header=header)
