"""Declarative, invertible maps between a network's checkpoint tensors and its module parameters.

A :class:`KeyMap` says, for one network, which checkpoint keys it owns and how each becomes a module
parameter, in three ordered steps whose inverses are derived, never written by hand:

1. **roots**: a checkpoint prefix (or one whole key) is swapped for a module prefix
   (``model.diffusion_model.`` -> ``""``, ``vae.per_channel_statistics.std-of-means`` ->
   ``per_channel_statistics.std_of_means``). A root may exclude sub-prefixes that belong to another
   network (the text connectors under the transformer's prefix).
2. **renames**: literal fragments of the root-relative name swapped in order (``.to_out.0.`` ->
   ``.to_out.``); a leading ``^`` anchors a fragment at the start of the name. The inverse swaps them
   back in reverse order.
3. **layouts**: per-tensor transforms from the official PyTorch layout to MLX's (a conv weight
   ``(out, in, *k)`` -> ``(out, *k, in)``), each paired with its inverse, chosen by the module name
   (regex) and the tensor's rank.

``to_module`` maps checkpoint tensors to module tensors; ``to_checkpoint`` is its inverse, so a
network's ``to_checkpoint(model)`` (the official layout of its parameters) costs nothing to write.
Each network's package declares its map next to its loader; the tests round-trip every key of the
tiny checkpoints through it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

import mlx.core as mx

from .safetensors_file import CheckpointError


@dataclass(frozen=True)
class Root:
    """Checkpoint prefix ``checkpoint`` <-> module prefix ``module`` (``exact``: both are whole names)."""

    checkpoint: str
    module: str
    exclude: tuple[str, ...] = ()  # checkpoint prefixes under ``checkpoint`` owned by another network
    exact: bool = False

    def owns(self, key: str) -> bool:
        if self.exact:
            return key == self.checkpoint
        return key.startswith(self.checkpoint) and not key.startswith(self.exclude)

    def owns_name(self, name: str) -> bool:
        return name == self.module if self.exact else name.startswith(self.module)


@dataclass(frozen=True)
class Rename:
    """A fragment of the root-relative checkpoint name and what it is called in the module."""

    checkpoint: str
    module: str

    def __post_init__(self) -> None:
        if self.checkpoint.startswith("^") != self.module.startswith("^"):
            raise ValueError(f"rename {self}: anchor both sides or neither")

    @staticmethod
    def _swap(name: str, old: str, new: str) -> str:
        if old.startswith("^"):
            return new[1:] + name[len(old) - 1:] if name.startswith(old[1:]) else name
        return name.replace(old, new)

    def forward(self, name: str) -> str:
        return self._swap(name, self.checkpoint, self.module)

    def backward(self, name: str) -> str:
        return self._swap(name, self.module, self.checkpoint)


@dataclass(frozen=True)
class Layout:
    """A tensor layout change between the official file and the module, with its inverse."""

    name: str
    to_module: Callable[[mx.array], mx.array]
    to_checkpoint: Callable[[mx.array], mx.array]
    keeps_rank: bool = True


# PyTorch Conv{1,2,3}d (out, in, *k) <-> MLX (out, *k, in)
CONV = Layout("conv", lambda w: mx.moveaxis(w, 1, -1), lambda w: mx.moveaxis(w, -1, 1))
# PyTorch ConvTranspose (in, out, *k) <-> MLX (out, *k, in)
CONV_TRANSPOSE = Layout("conv_transpose", lambda w: mx.moveaxis(w, 0, -1), lambda w: mx.moveaxis(w, -1, 0))
# a 1-D FIR filter stored as a (1, 1, taps) conv kernel <-> (taps,)
FLAT_FILTER = Layout("flat_filter", lambda w: w.reshape(-1), lambda w: w.reshape(1, 1, -1), keeps_rank=False)


@dataclass(frozen=True)
class LayoutRule:
    """Apply ``layout`` to tensors whose module name matches ``pattern`` (searched) and whose rank is in
    ``ndims`` (empty: any rank). The first matching rule wins."""

    layout: Layout
    pattern: str = ""
    ndims: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.ndims and not self.layout.keeps_rank:
            raise ValueError(f"{self.layout.name} changes the rank: match it by name, not by ndims")

    def applies(self, name: str, ndim: int) -> bool:
        return (not self.ndims or ndim in self.ndims) and re.search(self.pattern, name) is not None


@dataclass(frozen=True)
class KeyMap:
    """One network's checkpoint <-> module map (see the module docstring)."""

    network: str  # what the network is called in messages
    roots: tuple[Root, ...]
    renames: tuple[Rename, ...] = ()
    layouts: tuple[LayoutRule, ...] = ()
    # the converted-file parts (models/weights/converted.py) that can serve it, first held wins
    parts: tuple[str, ...] = ()
    # the network lies under exactly ONE of ``roots`` in a file: the first root holding ``<root>pick_root``
    pick_root: str | None = None
    describe: str = "an LTX-2 checkpoint"  # what file holds it, for "is this ...?" messages
    # LoRA targets (``diffusion_model.<path>`` in a LoRA file) are ``<lora_root><path>`` checkpoint keys
    lora_root: str | None = None
    # metadata entries of a single official file that may hold the config, in order of preference
    config_keys: tuple[str, ...] = ("config",)
    _order: tuple[Root, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # exact roots first, then the longest prefix: the most specific root decides, both ways
        order = sorted(self.roots, key=lambda r: (not r.exact, -len(r.checkpoint)))
        object.__setattr__(self, "_order", tuple(order))

    # ------------------------------------------------------------------ names
    def owns(self, key: str) -> bool:
        """Whether checkpoint ``key`` belongs to this network."""
        return any(r.owns(key) for r in self.roots)

    def owns_name(self, name: str) -> bool:
        """Whether module name ``name`` lies under one of the roots (for files already in module naming)."""
        return any(r.owns_name(name) for r in self.roots)

    def select(self, keys: Iterable[str]) -> list[str]:
        """The checkpoint keys this network owns, in their order."""
        return [k for k in keys if self.owns(k)]

    def module_name(self, key: str) -> str:
        for r in self._order:
            if r.owns(key):
                rest = key[len(r.checkpoint):]
                for rule in self.renames:
                    rest = rule.forward(rest)
                return r.module + rest
        raise KeyError(f"{key!r} is not a {self.network} checkpoint key")

    def checkpoint_key(self, name: str) -> str:
        for r in sorted(self._order, key=lambda r: (not r.exact, -len(r.module))):
            if r.owns_name(name):
                rest = name[len(r.module):]
                for rule in reversed(self.renames):
                    rest = rule.backward(rest)
                return r.checkpoint + rest
        raise KeyError(f"{name!r} is not a {self.network} parameter name")

    def layout(self, name: str, ndim: int) -> Layout | None:
        """The layout change of module tensor ``name`` of rank ``ndim`` (None: stored as the module holds it)."""
        return next((rule.layout for rule in self.layouts if rule.applies(name, ndim)), None)

    def module_shape(self, name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The module-side shape of a tensor the file stores with ``shape`` (header-only)."""
        layout = self.layout(name, len(shape))
        if layout is None:
            return tuple(shape)
        # a broadcast scalar stands in for the tensor: the layout's shape without any memory
        return tuple(layout.to_module(mx.broadcast_to(mx.array(0, mx.uint8), shape)).shape)

    # ------------------------------------------------------------------ tensors
    def to_module(self, tensors: Mapping[str, mx.array]) -> dict[str, mx.array]:
        """Checkpoint-keyed tensors (official layouts) -> module-named tensors (MLX layouts)."""
        out = {}
        for key, v in tensors.items():
            name = self.module_name(key)
            layout = self.layout(name, v.ndim)
            out[name] = layout.to_module(v) if layout is not None else v
        return out

    def to_checkpoint(self, tensors: Mapping[str, mx.array]) -> dict[str, mx.array]:
        """Module-named tensors -> checkpoint keys and official layouts: the inverse of :meth:`to_module`."""
        out = {}
        for name, v in tensors.items():
            layout = self.layout(name, v.ndim)
            out[self.checkpoint_key(name)] = layout.to_checkpoint(v) if layout is not None else v
        return out

    # ------------------------------------------------------------------ files
    def bind(self, keys: Iterable[str], where: str = "") -> "KeyMap":
        """This map as it applies to a file holding ``keys``: with ``pick_root``, only the root the file uses."""
        if self.pick_root is None:
            return self
        keys = set(keys)
        for r in self.roots:
            if r.checkpoint + self.pick_root in keys:
                return replace(self, roots=(r,))
        raise CheckpointError(f"{where + ': ' if where else ''}no {self.network} found: expected {self.pick_root} "
                              f"under one of {[r.checkpoint for r in self.roots]}")

    @property
    def main_prefix(self) -> str:
        """The checkpoint prefix of the network's body (its first root), for messages."""
        return self.roots[0].checkpoint
