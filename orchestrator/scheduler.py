"""A small DAG scheduler: run a plan's stages as soon as their inputs exist and the memory budget allows.

A task is *ready* when every task it reads from has finished (or was reused). Each ready task is asked,
in plan order, whether it has to run at all (``prepare()``: a reused stage returns None and never starts
a process). Ready tasks that must run start in plan order while the running tasks' memory requirements
plus the next one's stay within the budget; the first that does not fit waits for a running task to end
(no later task overtakes it, so a large stage is never starved). A task of unknown requirement runs alone.

Each running task's watchdog limit is the budget less the requirements of the others running beside it,
updated whenever that set changes: alone, a stage may use the whole budget; beside others, the sum stays
within the budget as long as each of them stays within its own estimate.

On a failure nothing new starts; the tasks already running are waited for, and the outcome reports the
failure. On an exception (Ctrl-C, an error in ``prepare``) the running tasks are cancelled and waited for,
then the exception goes on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from .executor import Executor, StageHandle, StageInvocation, StageRun

__all__ = ["Task", "Outcome", "Schedule", "run_dag"]


@dataclass
class Task:
    name: str
    after: tuple[str, ...]  # tasks whose outputs this one reads (names outside the plan are ignored)
    prepare: Callable[[], StageInvocation | None]  # called once, when ready: what to run, or None (reused)


@dataclass
class Outcome:
    name: str
    run: StageRun | None = None  # None: reused, nothing ran
    started: float | None = None  # clock() when submitted
    ended: float | None = None  # clock() when seen finished

    @property
    def ok(self) -> bool:
        return self.run is None or self.run.ok


@dataclass
class Schedule:
    outcomes: dict[str, Outcome] = field(default_factory=dict)  # in the order they finished
    failed: Outcome | None = None  # the first task that failed
    max_parallel: int = 0  # the most tasks that ran at once


def _requirement(inv: StageInvocation, budget: int) -> int:
    """What a task counts against the budget: its estimate, at most the whole budget (unknown: all of it)."""
    return budget if inv.requirement is None else min(max(int(inv.requirement), 0), budget)


def run_dag(tasks: Sequence[Task], budget: int, executor: Executor, *,
            on_start: Callable[[Task, StageInvocation], None] | None = None,
            on_finish: Callable[[Task, Outcome], None] | None = None,
            on_event: Callable[[dict], None] | None = None,
            clock: Callable[[], float] = time.monotonic, poll_s: float = 0.05) -> Schedule:
    """Run ``tasks`` (in plan order: every task after those it reads from) on ``executor``."""
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ValueError(f"task names repeat: {names}")
    known = set(names)
    result = Schedule()
    pending: list[Task] = list(tasks)
    prepared: dict[str, StageInvocation] = {}
    running: dict[str, tuple[Task, StageHandle, int, Outcome]] = {}  # name -> task, handle, requirement, outcome
    finished: set[str] = set()

    def ready(t: Task) -> bool:
        return all(a in finished or a not in known for a in t.after)

    def finish(t: Task, out: Outcome) -> None:
        finished.add(t.name)
        result.outcomes[t.name] = out
        if on_finish is not None:
            on_finish(t, out)

    def limits(reqs: dict[str, int]) -> dict[str, int]:
        total = sum(reqs.values())
        return {n: budget - (total - r) for n, r in reqs.items()}

    def admit() -> None:
        """Start what is ready and fits, in plan order; reused tasks finish on the spot."""
        starting: list[tuple[Task, StageInvocation, int]] = []
        used = sum(r for _, _, r, _ in running.values())
        again = True
        while again:
            again = False
            for t in list(pending):
                if not ready(t):
                    continue
                if t.name not in prepared:
                    inv = t.prepare()
                    if inv is None:
                        pending.remove(t)
                        finish(t, Outcome(t.name))
                        again = True  # its readers may be ready now: look again from the start
                        break
                    prepared[t.name] = inv
                inv = prepared[t.name]
                req = _requirement(inv, budget)
                if used + req > budget:
                    return _start(starting)  # the first ready task that does not fit waits; none overtakes it
                pending.remove(t)
                starting.append((t, inv, req))
                used += req
        _start(starting)

    def _start(starting: list[tuple[Task, StageInvocation, int]]) -> None:
        if not starting:
            return
        reqs = {n: r for n, (_, _, r, _) in running.items()} | {t.name: r for t, _, r in starting}
        lim = limits(reqs)
        for n, (_, handle, _, _) in running.items():
            handle.set_limit(lim[n])
        for t, inv, req in starting:
            inv = replace(inv, budget_bytes=lim[t.name])
            if on_start is not None:
                on_start(t, inv)
            out = Outcome(t.name, started=clock())
            handle = executor.submit(inv, on_event)
            running[t.name] = (t, handle, req, out)
        result.max_parallel = max(result.max_parallel, len(running))

    def reap() -> bool:
        """Record every running task that has ended; True if any had."""
        ended = [n for n, (_, h, _, _) in running.items() if h.done()]
        for n in ended:
            t, h, _, out = running.pop(n)
            out.run = h.wait()
            out.ended = clock()
            finish(t, out)  # on_finish may still find it failed (e.g. its output is missing)
            if not out.ok and result.failed is None:
                result.failed = out
        if ended and running:
            lim = limits({n: r for n, (_, _, r, _) in running.items()})
            for n, (_, h, _, _) in running.items():
                h.set_limit(lim[n])
        return bool(ended)

    try:
        admit()
        while running:
            if not reap():
                time.sleep(poll_s)
                continue
            if result.failed is None:
                admit()
    except BaseException:
        for _, h, _, _ in running.values():
            h.cancel()
        for _, h, _, _ in running.values():
            try:
                h.wait()
            except Exception:  # noqa: BLE001 - the first error is the one to report
                pass
        raise
    if result.failed is None and pending:
        # nothing runs, yet tasks remain: one reads a task that never finished (cannot happen in plan order)
        raise RuntimeError(f"tasks never became ready: {[t.name for t in pending]}")
    return result
