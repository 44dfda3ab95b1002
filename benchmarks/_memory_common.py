"""Helpers shared by the memory benchmarks (not a test): random weight files in official layouts,
one subprocess per mode with its peak RSS from os.wait4, page-cache eviction, table printing."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

OPENBLAS = "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0"
GiB = 1 << 30


def write_random_bf16(path: Path, layout: dict[str, tuple[int, ...]], metadata: dict[str, str], seed: int = 0) -> int:
    """A safetensors file with random bf16 tensors of ``layout`` (matrices ~ N(0, 1/fan_in), vectors ~ N(0, .02^2)),
    written tensor by tensor (never more than one tensor in memory); returns its size."""
    import numpy as np

    header: dict = {"__metadata__": dict(metadata)}
    offset = 0
    for k in sorted(layout):
        n = math.prod(layout[k]) * 2
        header[k] = {"dtype": "BF16", "shape": list(layout[k]), "data_offsets": [offset, offset + n]}
        offset += n
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    rng = np.random.default_rng(seed)
    chunk = 1 << 22  # values per write: keeps this process small (see run_child on why that matters)
    with open(path, "wb") as f:
        f.write(len(head).to_bytes(8, "little") + head)
        for k in sorted(layout):
            shape = layout[k]
            scale = np.float32(1.0 / math.sqrt(shape[-1]) if len(shape) >= 2 else 0.02)
            left = math.prod(shape)
            while left:
                n = min(left, chunk)
                x = rng.standard_normal(n, dtype=np.float32) * scale
                f.write((x.view(np.uint32) >> 16).astype(np.uint16).tobytes())  # bf16 by truncation: random anyway
                left -= n
    return 8 + len(head) + offset


def evict(path: Path) -> None:
    """Drop the file's pages from the page cache (so the next read comes from disk); no root needed."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def run_child(script: str, argv: list[str], timeout: float = 900) -> dict:
    """Run ``script argv`` with OpenBLAS preloaded; its last RESULT line as a dict, plus its peak RSS (wait4).

    Linux folds the parent's RSS high-water mark at the fork into the child's ru_maxrss, so wait4 reports
    max(child's own peak, parent's peak so far): the parent must stay small (``parent_peak_rss`` is
    reported with every result to show it did)."""
    import resource

    parent_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    env = dict(os.environ)
    if Path(OPENBLAS).exists():
        env["LD_PRELOAD"] = OPENBLAS
    t0 = time.time()
    proc = subprocess.Popen([sys.executable, script, *argv], stdout=subprocess.PIPE, text=True, env=env)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.stdout.close()
    if status != 0:
        raise SystemExit(f"child {argv} failed with status {status}:\n{out}")
    result = json.loads(next(line for line in reversed(out.splitlines()) if line.startswith("RESULT "))[7:])
    result["peak_rss"] = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    result["parent_peak_rss"] = parent_peak
    result["wall_s"] = time.time() - t0
    return result


def emit(result: dict) -> None:
    print("RESULT " + json.dumps(result), flush=True)


def gb(n: float) -> str:
    return f"{n / GiB:.2f}"


def table(rows: list[list[str]], head: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    line = lambda r: "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, rows)])
