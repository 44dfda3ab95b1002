"""How long each stage process takes to start: from process creation to the moment it begins its work.

Renders the tiny job once into a temporary folder (a fresh store), recording each stage's invocation, then
starts every stage again by itself, as `ltx2 run` starts it, into a fresh output N times, and prints per stage
the median of the ``since_process_start`` its "start" progress event reports (interpreter start, imports,
opening the inputs, params, weights, lock, estimate: everything before the stage's run()), and its min and
max (the min is the figure a busy machine changes least). The stages may cache their bytecode (in the
temporary folder, whatever PYTHONDONTWRITEBYTECODE says: a user's stages do), and each is started once,
unmeasured, first.

    python benchmarks/stage_start.py [--repeats 5] [--importtime]

--importtime also runs each stage once under ``python -X importtime`` and prints its slowest top-level
imports. Quote the figures with the machine's load: they are only comparable on an idle machine.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import yaml

from ltx2.models.tiny import ensure_tiny_model
from ltx2.orchestrator.execute import run_job
from ltx2.orchestrator.executor import LocalExecutor, StageHandle, StageInvocation
from ltx2.orchestrator.job import load_job
from ltx2.orchestrator.runner import StageProcess, stage_command, stage_env

ROOT = Path(__file__).resolve().parents[1]


class Recording(LocalExecutor):
    """The local executor, keeping every invocation it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.invocations: list[StageInvocation] = []

    def submit(self, inv: StageInvocation, on_event: Callable[[dict], None] | None = None) -> StageHandle:
        self.invocations.append(inv)
        return super().submit(inv, on_event)


def with_out(args: tuple[str, ...], out: Path) -> list[str]:
    """The invocation's arguments writing to ``out`` instead (a fresh output: nothing reused)."""
    a = list(args)
    a[a.index("--out") + 1] = str(out)
    return a


def fresh_out(inv: StageInvocation, folder: Path, tag: str) -> Path:
    """A new output path of the invocation's kind (.zarr, .mp4, .png) in ``folder``."""
    return folder / f"{inv.stage}-{tag}{Path(inv.args[inv.args.index('--out') + 1]).suffix}"


def start_seconds(inv: StageInvocation, out: Path, env: dict[str, str]) -> float:
    """Seconds from the stage process's creation to its "start" event."""
    log = out.parent / f"{out.name}.log"
    run = StageProcess(inv.stage, with_out(inv.args, out), log, inv.budget_bytes, env=env).start().wait()
    start = next((e for e in run.events if e.get("event") == "start"), None)
    if not run.ok or start is None:
        raise SystemExit(f"{inv.stage} did not start cleanly ({run.message}); see {log}")
    return float(start["since_process_start"])


def slowest_imports(inv: StageInvocation, out: Path, env: dict[str, str], top: int) -> list[tuple[float, str]]:
    """The stage's slowest imports (cumulative ms, module) as nested under the entry, from -X importtime."""
    cmd = stage_command(inv.stage, with_out(inv.args, out))
    r = subprocess.run([cmd[0], "-X", "importtime", *cmd[1:]], env=stage_env(env), capture_output=True, text=True)
    rows = []
    for line in r.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
        if m and len(m[2]) <= 4:  # the entry's own imports and theirs, not deeper
            rows.append((int(m[1]) / 1000, f"{' ' * (len(m[2]) - 1)}{m[3]}"))
    return sorted(rows, reverse=True)[:top]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--importtime", action="store_true", help="also list each stage's slowest imports")
    args = ap.parse_args()
    ensure_tiny_model()  # generation is a one-off, not a stage's start
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        job = yaml.safe_load((ROOT / "examples" / "tiny.yaml").read_text())
        job.update(output=str(tmp / "out.mp4"), work_dir=str(tmp / "work"), store=str(tmp / "store"))
        (tmp / "job.yaml").write_text(yaml.safe_dump(job))
        rec = Recording()
        run_job(load_job(tmp / "job.yaml"), str(tmp / "job.yaml"), executor=rec)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
        for inv in rec.invocations:  # warm-up: bytecode cached, files in the page cache
            start_seconds(inv, fresh_out(inv, tmp / "again", "warm-up"), env)
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"stage start (process creation -> its run() begins), seconds; median of {args.repeats} starts per "
              f"stage; load average {load:.1f} on {os.cpu_count()} cores")
        print(f"{'stage':<16} {'median':>7} {'min':>6} {'max':>6}")
        for inv in rec.invocations:
            wall = [start_seconds(inv, fresh_out(inv, tmp / "again", str(i)), env) for i in range(args.repeats)]
            print(f"{inv.stage:<16} {statistics.median(wall):7.3f} {min(wall):6.3f} {max(wall):6.3f}", flush=True)
        if args.importtime:
            for inv in rec.invocations:
                print(f"\n{inv.stage}: slowest imports (cumulative ms)")
                for ms, mod in slowest_imports(inv, fresh_out(inv, tmp / "again", "importtime"), env, 12):
                    print(f"  {ms:8.1f}  {mod}")


if __name__ == "__main__":
    main()
