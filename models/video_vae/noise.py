"""Where the decoder's random numbers come from.

The official decoder draws its noise from a torch Generator: one draw of the latent's shape for
timestep conditioning, and one (H, W) draw after each convolution of a res block built with
``inject_noise``. We cannot reproduce torch's generator in MLX, so the decoder asks a
``NoiseSource`` for each draw, in the same order the official forward makes them:

- ``KeyNoise(mx.random.key(seed))`` for real use: reproducible from the key, and each tile of a
  tiled decode gets its own key, so any tile can be (re)decoded on its own, e.g. after a resume.
- ``SuppliedNoise(arrays)`` for parity: hands out given arrays (channels-last), e.g. the exact
  tensors the official decoder drew, in order; across the tiles of a tiled decode it keeps
  handing them out in sequence, as the official tiled decode keeps drawing from one generator.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import mlx.core as mx


class NoiseSource(Protocol):
    def draw(self, shape: tuple[int, ...]) -> mx.array:
        """The next standard-normal float32 array of ``shape``."""

    def for_tile(self, index: int, count: int) -> NoiseSource:
        """The source tile ``index`` of ``count`` draws from."""


class KeyNoise:
    """Standard normal noise from an MLX key; draw n uses the n-th split of the key."""

    def __init__(self, key: mx.array):
        self._key = key

    def draw(self, shape: tuple[int, ...]) -> mx.array:
        self._key, sub = mx.random.split(self._key)
        return mx.random.normal(shape, dtype=mx.float32, key=sub)

    def for_tile(self, index: int, count: int) -> KeyNoise:
        # A key per tile that depends only on (key, index, count), not on which tiles ran before.
        return KeyNoise(mx.random.split(self._key, num=count)[index])


class SuppliedNoise:
    """Hands out the given arrays in order; a draw of the wrong shape, or one too many, is an error."""

    def __init__(self, arrays: Sequence[mx.array]):
        self._arrays = list(arrays)
        self._next = 0

    def draw(self, shape: tuple[int, ...]) -> mx.array:
        if self._next >= len(self._arrays):
            raise ValueError(f"supplied noise exhausted: draw {self._next + 1} of shape {shape} asked, "
                             f"only {len(self._arrays)} arrays given")
        a = self._arrays[self._next]
        if tuple(a.shape) != tuple(shape):
            raise ValueError(f"supplied noise {self._next} has shape {tuple(a.shape)}, the decoder needs {shape}")
        self._next += 1
        return a.astype(mx.float32)

    def for_tile(self, index: int, count: int) -> SuppliedNoise:
        return self

    @property
    def remaining(self) -> int:
        return len(self._arrays) - self._next
