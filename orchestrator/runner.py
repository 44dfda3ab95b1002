"""Start one stage as its own process, follow its progress, watch its memory, record its peak.

Stages are started with subprocess (never fork after MLX has started). The parent reads the
stage's JSON progress lines from a pipe whose write end the child receives as `--progress-fd`,
polls the child's RSS with psutil and ends it if it passes its budget, and takes the child's
peak RSS from os.wait4's rusage.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil


@dataclass
class StageRun:
    name: str
    returncode: int
    wall_s: float
    peak_rss: int  # bytes, from wait4 (the child's own peak)
    killed_for_memory: bool = False
    message: str = ""  # a clear sentence when the stage did not succeed
    events: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.returncode == 0


# Where Linux distributions put an OpenBLAS that exports the CBLAS symbols MLX calls.
BLAS_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
)


def optimized_blas() -> str | None:
    """An optimised BLAS to preload into Linux stage processes, or None.

    MLX's Linux CPU wheel ships a reference BLAS (a few GFLOP/s for float32 matmul); preloading
    OpenBLAS puts its cblas_* symbols first, about 50x faster. LTX2_BLAS names a library to use
    instead, or "none" to keep MLX's own. Apple machines use Accelerate and need nothing.
    """
    if not sys.platform.startswith("linux"):
        return None
    choice = os.environ.get("LTX2_BLAS", "")
    if choice.lower() == "none":
        return None
    if choice:
        return choice if Path(choice).exists() else None
    return next((c for c in BLAS_CANDIDATES if Path(c).exists()), None)


def stage_env(base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env.pop("LTX2_PARENT_PID", None)
    blas = optimized_blas()
    if blas and blas not in env.get("LD_PRELOAD", ""):
        env["LD_PRELOAD"] = f"{blas} {env['LD_PRELOAD']}".strip() if env.get("LD_PRELOAD") else blas
    return env


def stage_command(name: str, args: list[str]) -> list[str]:
    return [sys.executable, "-m", "ltx2.cli.main", "stage", name, *args]


def _read_progress(fd: int, sink: list[dict], on_event: Callable[[dict], None] | None) -> None:
    with os.fdopen(fd, "r") as f:
        for line in f:
            try:
                ev = json.loads(line)
            except json.JSONDecodeError:
                continue  # the descriptor is ours alone, but never let a bad line stop the run
            sink.append(ev)
            if on_event is not None:
                on_event(ev)


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GB" if n >= 2**30 else f"{n / 2**20:.0f} MB"


def _rss_tree(p: psutil.Process) -> int:
    try:
        total = p.memory_info().rss
        for c in p.children(recursive=True):
            try:
                total += c.memory_info().rss
            except psutil.Error:
                pass
        return total
    except psutil.Error:
        return 0


def run_stage(name: str, args: list[str], log_path: Path, budget_bytes: int | None = None,
              on_event: Callable[[dict], None] | None = None, poll_s: float = 0.1,
              env: dict[str, str] | None = None) -> StageRun:
    """Run `ltx2 stage NAME ARGS --progress-fd N`, logging stdout+stderr to ``log_path``."""
    r, w = os.pipe()
    cmd = stage_command(name, [*args, "--progress-fd", str(w)])
    log_path.parent.mkdir(parents=True, exist_ok=True)
    events: list[dict] = []
    t0 = time.monotonic()
    with open(log_path, "ab") as log:
        log.write(f"$ {' '.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, pass_fds=(w,),
                                env={**stage_env(env), "LTX2_PARENT_PID": str(os.getpid())},
                                start_new_session=True)
    os.close(w)
    reader = threading.Thread(target=_read_progress, args=(r, events, on_event), daemon=True)
    reader.start()
    ps = psutil.Process(proc.pid)
    killed_rss = 0
    status = None
    rusage = None
    try:
        while True:
            pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if budget_bytes is not None and not killed_rss:
                rss = _rss_tree(ps)
                if rss > budget_bytes:
                    killed_rss = rss
                    os.killpg(proc.pid, signal.SIGKILL)
            time.sleep(poll_s)
    except KeyboardInterrupt:
        # Ctrl-C: stop the stage too (its partial artifact stays resumable), then re-raise
        try:
            os.killpg(proc.pid, signal.SIGKILL)
            os.wait4(proc.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    reader.join(timeout=5)
    wall = time.monotonic() - t0
    peak = int(rusage.ru_maxrss) * (1 if sys.platform == "darwin" else 1024)
    run = StageRun(name, proc.returncode, wall, peak, killed_for_memory=bool(killed_rss), events=events)
    if killed_rss:
        run.message = (f"{name} was killed at {_size(killed_rss)}, over its {_size(budget_bytes)} budget: "
                       "lower its tile size or raise memory_budget in the job")
    elif run.returncode < 0:
        run.message = (f"{name} died from signal {signal.Signals(-run.returncode).name} after {wall:.1f} s "
                       f"(peak {_size(peak)}); see {log_path}")
    elif run.returncode != 0:
        errs = [e.get("message", "") for e in events if e.get("event") == "error"]
        run.message = errs[-1] if errs else f"{name} exited with code {run.returncode}; see {log_path}"
    return run
