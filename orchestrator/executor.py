"""The executor seam: how a stage invocation becomes a running stage, wherever it runs.

The scheduler hands an :class:`Executor` one :class:`StageInvocation` at a time (the stage, its
command-line arguments, where its log goes, the memory it is expected to need and the limit its
watchdog enforces) and gets back a :class:`StageHandle` to follow it: the progress events so far,
``done()``, ``wait()`` for its :class:`StageRun` (exit code, wall time, measured peak), ``cancel()``,
and ``set_limit()`` when the stages running beside it change.

:class:`LocalExecutor` runs each stage as a process on this machine (``runner.StageProcess``: a
progress pipe, a psutil RSS watchdog, the peak from wait4), watched from a thread per submission so
that independent stages run at the same time. Another executor (a render farm, a test's fake) only
has to honour the same protocol.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from .runner import StageProcess, StageRun

__all__ = ["StageInvocation", "StageHandle", "Executor", "LocalExecutor", "LocalHandle", "StageRun"]


@dataclass(frozen=True)
class StageInvocation:
    """One run of one stage, as any executor needs it."""

    stage: str
    args: tuple[str, ...]  # `ltx2 stage NAME` arguments: --in, --out, --cache-key, --budget, --params-json, ...
    log_path: Path
    budget_bytes: int | None = None  # the RSS the watchdog allows at the start (None: not watched)
    requirement: int | None = None  # the planner's estimated peak in bytes (None: unknown, so it runs alone)


@runtime_checkable
class StageHandle(Protocol):
    """A submitted stage. Every method may be called from the thread that submitted it."""

    invocation: StageInvocation

    @property
    def events(self) -> list[dict]:
        """The stage's progress events received so far (JSON objects: plan, step, resumed, done, error...)."""
        ...

    def done(self) -> bool:
        """True once the stage has ended (wait() then returns at once)."""
        ...

    def wait(self, timeout: float | None = None) -> StageRun | None:
        """The finished stage's StageRun; None if it is still running after ``timeout`` seconds."""
        ...

    def cancel(self) -> None:
        """End the stage now (its partial artifact stays resumable); wait() still reports how it ended."""
        ...

    def set_limit(self, budget_bytes: int | None) -> None:
        """Change the memory limit the stage is held to while it runs."""
        ...


@runtime_checkable
class Executor(Protocol):
    def submit(self, inv: StageInvocation, on_event: Callable[[dict], None] | None = None) -> StageHandle:
        """Start ``inv``; ``on_event`` receives each progress event as it arrives (from any thread)."""
        ...


class LocalHandle:
    """A stage process on this machine, watched by its own thread."""

    def __init__(self, inv: StageInvocation, on_event: Callable[[dict], None] | None = None, poll_s: float = 0.1,
                 env: dict[str, str] | None = None):
        self.invocation = inv
        self._proc = StageProcess(inv.stage, list(inv.args), inv.log_path, inv.budget_bytes, on_event, poll_s, env)
        self._run: StageRun | None = None
        self._error: BaseException | None = None
        self._finished = threading.Event()
        # Started here, in the submitting thread (the scheduler's: the run's main thread), not in the watching
        # thread below, which ends with the stage: a stage started from the main thread is also tied to it by
        # PR_SET_PDEATHSIG on Linux, besides the lifeline every stage gets (runner.StageProcess.start).
        self._proc.start()
        self._thread = threading.Thread(target=self._watch, name=f"ltx2-{inv.stage}", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        try:
            self._run = self._proc.wait()
        except BaseException as e:  # noqa: BLE001 - handed to whoever waits
            self._error = e
        finally:
            self._finished.set()

    @property
    def events(self) -> list[dict]:
        return list(self._proc.events)

    def done(self) -> bool:
        return self._finished.is_set()

    def wait(self, timeout: float | None = None) -> StageRun | None:
        if not self._finished.wait(timeout):
            return None
        if self._error is not None:
            raise self._error
        return self._run

    def cancel(self) -> None:
        self._proc.kill()

    def set_limit(self, budget_bytes: int | None) -> None:
        self._proc.limit = budget_bytes


class LocalExecutor:
    """Runs every stage as a process on this machine (today's runner), several at once if asked."""

    def __init__(self, poll_s: float = 0.1, env: dict[str, str] | None = None):
        self.poll_s, self.env = poll_s, env

    def submit(self, inv: StageInvocation, on_event: Callable[[dict], None] | None = None) -> LocalHandle:
        return LocalHandle(inv, on_event, self.poll_s, self.env)
