"""The stage contract shared by every stage process: exit codes, errors, progress lines, memory budget.

A stage is started by the orchestrator as `ltx2 stage NAME ...` (or by hand). It reports progress
as JSON lines on a file descriptor the parent passes (`--progress-fd`), never on stdout, so stray
library output cannot corrupt the stream.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import stat
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from ltx2.spec.errors import EXIT_BAD_INPUT, EXIT_DOES_NOT_FIT, EXIT_OK, BadInputError, DoesNotFitError, Ltx2Error

__all__ = ["EXIT_OK", "EXIT_BAD_INPUT", "EXIT_DOES_NOT_FIT", "StageError", "BadInput", "DoesNotFit", "MemoryPlan",
           "check_budget", "parse_memory_size", "limit_data_segment", "Progress", "die_with_parent", "gib",
           "PROCESS_BASELINE_BYTES", "PARENT_PID_ENV", "LIFELINE_FD_ENV"]

StageError = Ltx2Error  # a stage's own failure that is neither bad input nor memory: exit 1
BadInput = BadInputError  # an input artifact, option or weight file is wrong; the message names it and the fix
DoesNotFit = DoesNotFitError  # what the stage would hold exceeds its budget; the message says how much


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GB"


# The interpreter, MLX, numpy, zarr and the rest of a stage process before any tensor (measured
# ~70-150 MB on Linux for the tiny stages).
PROCESS_BASELINE_BYTES = 150 << 20


@dataclass
class MemoryPlan:
    """What a stage expects to hold: weights (from safetensors headers) plus activations for its shape."""

    weights_bytes: int
    activations_bytes: int
    baseline_bytes: int = PROCESS_BASELINE_BYTES

    @property
    def total(self) -> int:
        return self.weights_bytes + self.activations_bytes + self.baseline_bytes


def check_budget(stage: str, plan: MemoryPlan, budget_bytes: int | None, fix: str) -> None:
    """Refuse before loading anything if the plan exceeds the budget (exit 75 with the numbers)."""
    if budget_bytes is None or plan.total <= budget_bytes:
        return
    raise DoesNotFit(f"{stage} needs about {gib(plan.total)} (weights {gib(plan.weights_bytes)}, activations "
                     f"{gib(plan.activations_bytes)}, process {gib(plan.baseline_bytes)}) but its budget is "
                     f"{gib(budget_bytes)}: {fix}")


_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_memory_size(value: Any) -> int:
    """``"10GB"``, ``"10 GiB"``, ``"1.5g"``, ``"512MB"`` or an integer number of bytes -> bytes (a stage's
    ``--budget`` and a job's ``memory_budget``)."""
    if isinstance(value, bool):
        raise ValueError("is not a memory size")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(?:i?[bB])?\s*", value)
        if m:
            return int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    raise ValueError("is not a memory size")


def limit_data_segment(budget_bytes: int | None) -> None:
    """On Linux, cap the data segment a little above the budget (RLIMIT_AS would break MLX)."""
    if budget_bytes is None or not sys.platform.startswith("linux"):
        return
    import resource  # Unix only

    cap = int(budget_bytes * 1.5) + (1 << 30)  # headroom: allocator slack, interpreter, libraries
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (cap, hard))


class Progress:
    """JSON-lines progress on the descriptor the parent passed; silent when there is none."""

    def __init__(self, stage: str, fd: int | None):
        self.stage = stage
        self._f = os.fdopen(fd, "w", buffering=1, closefd=True) if fd is not None else None
        self._t0 = time.monotonic()

    def emit(self, event: str, **fields) -> None:
        if self._f is None:
            return
        rec = {"stage": self.stage, "event": event, "t": round(time.monotonic() - self._t0, 3), **fields}
        try:
            self._f.write(json.dumps(rec) + "\n")
        except (BrokenPipeError, OSError):  # the parent went away; keep computing, the artifact is what matters
            self._f = None

    def step(self, done: int, total: int, **fields) -> None:
        self.emit("step", done=done, total=total, **fields)

    def close(self) -> None:
        if self._f is not None:
            try:
                self._f.close()
            except OSError:
                pass
            self._f = None


# How `ltx2 run` ties a stage's life to its own (orchestrator/runner.py sets both; a stage run by hand has neither).
PARENT_PID_ENV = "LTX2_PARENT_PID"  # the run's pid, given only when the run's main thread starts the stage
LIFELINE_FD_ENV = "LTX2_LIFELINE_FD"  # the read end of a pipe whose write end only the run holds

_armed = False


def die_with_parent() -> None:
    """End this stage the moment the `ltx2 run` that started it dies: a killed run must not leave a stage
    computing on. Call it first thing in the stage process, before the heavy imports (a run killed while its
    stage starts up must end it too); calling it again does nothing.

    Two mechanisms, either enough on its own:
    - the lifeline (every POSIX system, macOS included): the run holds the only write end of a pipe whose
      read end the stage gets; a thread here blocks reading it, and EOF, which the kernel delivers as soon as
      the run is gone however it died, kills this process. It needs the GIL to act, which MLX's eval releases.
    - on Linux, PR_SET_PDEATHSIG: the kernel itself SIGKILLs the stage when the thread that started it ends.
      The run passes its pid (PARENT_PID_ENV) only when that thread is its main thread, which lives as long as
      the run; a parent that is already gone by now (getppid differs) ends the stage at once.
    Both survive the BLAS re-exec (cli/stage_entry.py): the pipe's read end is inheritable, PDEATHSIG is kept
    across execve, and the re-exec passes both variables on."""
    global _armed
    if _armed:
        return
    _armed = True
    parent = os.environ.get(PARENT_PID_ENV)
    if parent and sys.platform.startswith("linux"):
        import ctypes  # Linux only

        PR_SET_PDEATHSIG = 1
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass
        if os.getppid() != int(parent):  # the run died before the request took effect
            os.kill(os.getpid(), signal.SIGKILL)
    lifeline = os.environ.get(LIFELINE_FD_ENV)
    if lifeline:
        try:
            fd = int(lifeline)
            if not stat.S_ISFIFO(os.fstat(fd).st_mode):
                return  # not the pipe the run passed (a stale variable): nothing to watch
        except (ValueError, OSError):
            return
        if select.select([fd], [], [], 0)[0] and os.read(fd, 64) == b"":  # the run is gone already
            os.kill(os.getpid(), signal.SIGKILL)
        threading.Thread(target=_watch_lifeline, args=(fd,), name="ltx2-lifeline", daemon=True).start()


def _watch_lifeline(fd: int) -> None:
    """Block on the run's pipe; EOF means the run is gone (nothing is ever written: data is ignored)."""
    while True:
        try:
            if os.read(fd, 64) == b"":
                os.kill(os.getpid(), signal.SIGKILL)  # as PDEATHSIG would: the partial artifact stays resumable
                return
        except InterruptedError:
            continue
        except OSError:
            return  # the descriptor was closed under us: nothing left to watch
