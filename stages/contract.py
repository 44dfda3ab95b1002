"""The stage contract shared by every stage process: exit codes, errors, progress lines, memory budget.

A stage is started by the orchestrator as `ltx2 stage NAME ...` (or by hand). It reports progress
as JSON lines on a file descriptor the parent passes (`--progress-fd`), never on stdout, so stray
library output cannot corrupt the stream.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass

from ltx2.spec.errors import EXIT_BAD_INPUT, EXIT_DOES_NOT_FIT, EXIT_OK, BadInputError, DoesNotFitError, Ltx2Error

__all__ = ["EXIT_OK", "EXIT_BAD_INPUT", "EXIT_DOES_NOT_FIT", "StageError", "BadInput", "DoesNotFit", "MemoryPlan",
           "check_budget", "limit_data_segment", "Progress", "die_with_parent", "gib", "PROCESS_BASELINE_BYTES"]

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


def die_with_parent() -> None:
    """End this stage if the `ltx2 run` that started it dies (Linux): a killed run must not leave an
    orphan stage computing on. The run passes its pid in LTX2_PARENT_PID; a stage run by hand has none."""
    parent = os.environ.get("LTX2_PARENT_PID")
    if not parent or not sys.platform.startswith("linux"):
        return
    import ctypes  # Linux only
    import signal

    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != int(parent):  # the parent died before the request took effect
        os._exit(1)
