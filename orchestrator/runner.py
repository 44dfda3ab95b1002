"""Start one stage as its own process, follow its progress, watch its memory, record its peak.

Stages are started with subprocess (never fork after MLX has started). The parent reads the
stage's JSON progress lines from a pipe whose write end the child receives as `--progress-fd`,
polls the child's RSS with psutil and ends it if it passes its budget, and takes the child's
peak RSS from os.wait4's rusage.

A stage never outlives the run that started it: it gets the read end of a second pipe (the lifeline)
whose write end only this process holds, and this process's pid when its main thread starts it; the
stage dies when the pipe reaches EOF or, on Linux, when that thread ends (stages.contract.die_with_parent).
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

from ltx2.stages.contract import LIFELINE_FD_ENV, PARENT_PID_ENV


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
    """The environment of a new stage process: ``base`` (default: this one's) with the optimised BLAS
    preloaded, and without any tie to a run (StageProcess gives a stage its own)."""
    env = dict(os.environ if base is None else base)
    env.pop(PARENT_PID_ENV, None)
    env.pop(LIFELINE_FD_ENV, None)
    blas = optimized_blas()
    if blas and blas not in env.get("LD_PRELOAD", ""):
        env["LD_PRELOAD"] = f"{blas} {env['LD_PRELOAD']}".strip() if env.get("LD_PRELOAD") else blas
    return env


def stage_command(name: str, args: list[str]) -> list[str]:
    """`ltx2 stage NAME ARGS` through the stage entry, which imports only what one stage needs."""
    return [sys.executable, "-m", "ltx2.cli.stage_entry", name, *args]


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


class StageProcess:
    """One stage process: started by ``start()``, watched by ``wait()`` until it exits.

    ``limit`` is the RSS the watchdog allows (None: no watch); it may be changed while the stage runs
    (the scheduler lowers it when another stage starts beside this one, raises it when that one ends).
    ``kill()`` may be called from another thread: the stage dies, its partial artifact stays resumable.
    """

    def __init__(self, name: str, args: list[str], log_path: Path, budget_bytes: int | None = None,
                 on_event: Callable[[dict], None] | None = None, poll_s: float = 0.1,
                 env: dict[str, str] | None = None):
        self.name, self.args, self.log_path = name, list(args), Path(log_path)
        self.limit = budget_bytes
        self.on_event, self.poll_s, self.env = on_event, poll_s, env
        self.events: list[dict] = []
        self.pid: int | None = None
        self.cancelled = False
        self._reaped = False  # once waited for, its pid may belong to another process: never signal it
        self._t0 = 0.0
        self._reader: threading.Thread | None = None
        self._popen: subprocess.Popen | None = None
        self._lifeline: int | None = None  # the lifeline's write end: open exactly as long as the stage may live

    def start(self) -> StageProcess:
        r, w = os.pipe()
        # os.pipe's descriptors are not inherited: only this stage gets life_r (pass_fds), and no process
        # but this one ever holds life_w, so the stage's end of the pipe reads EOF exactly when this one dies
        life_r, life_w = os.pipe()
        cmd = stage_command(self.name, [*self.args, "--progress-fd", str(w)])
        env = {**stage_env(self.env), LIFELINE_FD_ENV: str(life_r)}
        if threading.current_thread() is threading.main_thread():
            # PR_SET_PDEATHSIG follows the thread that starts the stage: only the main thread lasts as long
            # as this process (from any other, the lifeline alone ties the stage to the run)
            env[PARENT_PID_ENV] = str(os.getpid())
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._t0 = time.monotonic()
        try:
            with open(self.log_path, "ab") as log:
                log.write(f"$ {' '.join(cmd)}\n".encode())
                log.flush()
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, pass_fds=(w, life_r), env=env,
                                        start_new_session=True)
        except BaseException:
            os.close(r)
            os.close(life_w)
            raise
        finally:
            os.close(w)
            os.close(life_r)
        # Kept until the stage is reaped here: a Popen dropped while its process runs is polled (and so
        # reaped, rusage lost) by the next Popen anywhere in this process, e.g. the next stage's start.
        self._popen, self._lifeline = proc, life_w
        self.pid = proc.pid
        self._reader = threading.Thread(target=_read_progress, args=(r, self.events, self.on_event), daemon=True)
        self._reader.start()
        return self

    def kill(self, cancelled: bool = True) -> None:
        """End the stage (and anything it started) now."""
        self.cancelled = self.cancelled or cancelled
        if self.pid is None or self._reaped:
            return
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def _reaped_now(self, status: int | None) -> None:
        """The stage has been waited for: never signal its pid again, and let go of its lifeline."""
        self._reaped = True
        if self._popen is not None:
            self._popen.returncode = os.waitstatus_to_exitcode(status) if status is not None else -9
        if self._lifeline is not None:
            os.close(self._lifeline)
            self._lifeline = None

    def wait(self) -> StageRun:
        """Watch the stage until it exits; its StageRun (exit code, wall time, peak RSS, events, message)."""
        if self.pid is None:
            raise RuntimeError(f"stage {self.name} was not started")
        ps = psutil.Process(self.pid)
        killed_rss, killed_limit = 0, 0
        try:
            while True:
                pid, status, rusage = os.wait4(self.pid, os.WNOHANG)
                if pid:
                    self._reaped_now(status)
                    break
                limit = self.limit
                if limit is not None and not killed_rss:
                    rss = _rss_tree(ps)
                    if rss > limit:
                        killed_rss, killed_limit = rss, limit
                        self.kill(cancelled=False)
                time.sleep(self.poll_s)
        except KeyboardInterrupt:
            # Ctrl-C: stop the stage too (its partial artifact stays resumable), then re-raise
            self.kill()
            try:
                self._reaped_now(os.wait4(self.pid, 0)[1])
            except ChildProcessError:
                self._reaped_now(None)
            raise
        returncode = os.waitstatus_to_exitcode(status)
        if self._reader is not None:
            self._reader.join(timeout=5)
        wall = time.monotonic() - self._t0
        peak = int(rusage.ru_maxrss) * (1 if sys.platform == "darwin" else 1024)
        name, log_path = self.name, self.log_path
        run = StageRun(name, returncode, wall, peak, killed_for_memory=bool(killed_rss), events=self.events)
        if killed_rss:
            run.message = (f"{name} was killed at {_size(killed_rss)}, over its {_size(killed_limit)} budget: "
                           "lower its tile size or raise memory_budget in the job")
        elif self.cancelled and returncode != 0:
            run.message = f"{name} was stopped after {wall:.1f} s (another stage failed, or the run was interrupted)"
        elif returncode < 0:
            run.message = (f"{name} died from signal {signal.Signals(-returncode).name} after {wall:.1f} s "
                           f"(peak {_size(peak)}); see {log_path}")
        elif returncode != 0:
            errs = [e.get("message", "") for e in self.events if e.get("event") == "error"]
            run.message = errs[-1] if errs else f"{name} exited with code {returncode}; see {log_path}"
        return run


def run_stage(name: str, args: list[str], log_path: Path, budget_bytes: int | None = None,
              on_event: Callable[[dict], None] | None = None, poll_s: float = 0.1,
              env: dict[str, str] | None = None) -> StageRun:
    """Run `ltx2 stage NAME ARGS --progress-fd N` to its end, logging stdout+stderr to ``log_path``."""
    return StageProcess(name, args, log_path, budget_bytes, on_event, poll_s, env).start().wait()
