"""Reading the next block's bytes from disk while the current block computes (layer streaming).

A streamed network reads each block's tensors when it needs them; from a cold disk that read is time
the compute waits for. :class:`Prefetcher` reads the NEXT block's byte ranges in one background
thread, through a small fixed buffer, only to bring them into the OS file cache: the loader's own
read then comes from memory. It holds no tensor and adds one buffer (8 MiB) to the process, so
streaming still keeps one block's weights resident. ``LTX2_PREFETCH=0`` turns it off (to measure
what it saves).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

Range = tuple[str | Path, int, int]  # file, first byte, end byte (exclusive)


def prefetch_enabled() -> bool:
    return os.environ.get("LTX2_PREFETCH", "1").strip().lower() not in ("0", "no", "off", "false")


class Prefetcher:
    """One background reader; ``ahead(ranges)`` queues a read of those byte ranges and returns at once."""

    def __init__(self, chunk_bytes: int = 8 << 20):
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ltx2-prefetch")
        self._buf = bytearray(chunk_bytes)
        self._fds: dict[str, int] = {}
        self._lock = threading.Lock()
        self._last: Future | None = None
        self.bytes_read = 0
        self.seconds = 0.0

    def ahead(self, ranges: Iterable[Range]) -> None:
        ranges = sorted((str(p), int(b), int(e)) for p, b, e in ranges if e > b)
        if ranges:
            self._last = self._pool.submit(self._read, ranges)

    def wait(self) -> None:
        """Block until every queued read is done (tests, and before closing)."""
        if self._last is not None:
            self._last.result()

    def _fd(self, path: str) -> int:
        if path not in self._fds:
            self._fds[path] = os.open(path, os.O_RDONLY)
        return self._fds[path]

    def _read(self, ranges: list[tuple[str, int, int]]) -> None:
        t0 = time.perf_counter()
        view = memoryview(self._buf)
        n = 0
        for path, begin, end in ranges:
            fd, off = self._fd(path), begin
            while off < end:
                got = os.preadv(fd, [view[:min(len(view), end - off)]], off)  # releases the GIL
                if got <= 0:  # past the end of a truncated file: the loader will say so
                    break
                off += got
                n += got
        with self._lock:
            self.bytes_read += n
            self.seconds += time.perf_counter() - t0

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing left to tidy
            pass


def tensor_ranges(path: str | Path, header, keys: Iterable[str]) -> list[Range]:
    """The byte ranges of ``keys`` in the file with ``header`` (fp8 scales included)."""
    out: list[Range] = []
    for k in keys:
        info = header.tensors[k]
        out.append((path, info.begin, info.end))
        if info.scale is not None:
            out.append((path, info.scale.begin, info.scale.end))
    return out
