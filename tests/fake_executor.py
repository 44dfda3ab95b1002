"""Stand-ins for the stage processes behind the Executor protocol, for tests of the scheduler and of
run_job that need no render."""

from __future__ import annotations

from pathlib import Path

from ltx2.orchestrator.executor import StageInvocation, StageRun
from ltx2.stages.base import record_file


class FakeHandle:
    """Ends after ``polls`` calls of done(), with ``code``; records limits and cancellation."""

    def __init__(self, inv: StageInvocation, polls: int, code: int):
        self.invocation, self.polls, self.code = inv, polls, code
        self.limits = [inv.budget_bytes]
        self.cancelled = False

    @property
    def events(self) -> list[dict]:
        return []

    def done(self) -> bool:
        self.polls -= 1
        return self.polls <= 0 or self.cancelled

    def wait(self, timeout: float | None = None) -> StageRun:
        assert self.polls <= 0 or self.cancelled, "waited on before done()"
        code = -9 if self.cancelled else self.code
        return StageRun(self.invocation.stage, code, 0.0, 1, message="" if code == 0 else "it broke")

    def cancel(self) -> None:
        self.cancelled = True

    def set_limit(self, budget_bytes: int | None) -> None:
        self.limits.append(budget_bytes)


class FakeExecutor:
    def __init__(self, polls: dict[str, int] | None = None, codes: dict[str, int] | None = None):
        self.polls, self.codes = polls or {}, codes or {}
        self.handles: dict[str, FakeHandle] = {}
        self.order: list[str] = []

    def submit(self, inv: StageInvocation, on_event=None) -> FakeHandle:
        h = FakeHandle(inv, self.polls.get(inv.stage, 1), self.codes.get(inv.stage, 0))
        self.handles[inv.stage] = h
        self.order.append(inv.stage)
        return h


class StageWritingExecutor:
    """Stands in for the stage processes: writes a placeholder at --out (a folder, or a file output - the video,
    the preview - with its sidecar), records every invocation, and reports a fixed peak. Completes each stage on its second poll."""

    def __init__(self):
        self.invocations: list[StageInvocation] = []

    def submit(self, inv: StageInvocation, on_event=None) -> FakeHandle:
        self.invocations.append(inv)
        args = list(inv.args)
        out, key = Path(args[args.index("--out") + 1]), args[args.index("--cache-key") + 1]
        if out.suffix in (".mp4", ".png"):
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(b"file " + key.encode())
            record_file(out, key, {}, {})  # the sidecar a stage writes
        else:  # a placeholder is no artifact: each run makes it again, over the old one (as --recompute does)
            out.mkdir(parents=True, exist_ok=True)
        return FakeHandle(inv, 2, 0)
