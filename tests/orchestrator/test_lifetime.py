"""A stage never outlives the run that started it (stages.contract.die_with_parent, orchestrator/runner.py).

The quick tests start a stand-in stage (a few lines of Python, instead of `ltx2 stage`) through the real
StageProcess from a stand-in run, kill -9 the run, and check the stage is gone: with both mechanisms (main
thread), with the lifeline alone (started from another thread: what macOS, which has no PDEATHSIG, gets),
across the BLAS re-exec, and when the run dies before the stage has armed anything (its start-up imports).
The slow test kills a real `ltx2 run` of the example job at several moments of its stages' lives.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
import yaml

from ltx2.orchestrator.runner import StageProcess, stage_command

from support import EXAMPLE

# The stand-in stage: optionally sleeps first (the heavy imports a real stage does before it arms), ties itself to
# the run, optionally restarts itself as cli/stage_entry.py does for the BLAS, then reports and waits.
STAGE = textwrap.dedent("""
    import json, os, sys, time
    cfg = json.loads(sys.argv[1])
    time.sleep(cfg["sleep_before_arming"])
    from ltx2.stages.contract import die_with_parent
    die_with_parent()
    if cfg["reexec"]:
        import ltx2.orchestrator.runner as runner
        from ltx2.cli.stage_entry import reexec_with_optimized_blas
        runner.optimized_blas = lambda: cfg["preload"]  # a preload that differs: forces the restart
        reexec_with_optimized_blas()
    print(json.dumps({"pid": os.getpid(), "preload": os.environ.get("LD_PRELOAD", ""),
                      "parent_pid": os.environ.get("LTX2_PARENT_PID"),
                      "lifeline": os.environ.get("LTX2_LIFELINE_FD")}), flush=True)
    time.sleep(120)
""")

# The stand-in run: starts the stage through StageProcess (from its main thread or from a short-lived other
# thread), prints the stage's pid, then lives until it is killed.
RUN = textwrap.dedent("""
    import json, sys, threading, time
    from pathlib import Path
    import ltx2.orchestrator.runner as runner
    cfg = json.loads(sys.argv[1])
    runner.stage_command = lambda name, args: [sys.executable, "-c", cfg["stage_script"], json.dumps(cfg)]
    procs = []
    start = lambda: procs.append(runner.StageProcess("stand-in", [], Path(cfg["log"])).start())
    if cfg["thread"]:
        t = threading.Thread(target=start)
        t.start()
        t.join()  # the thread that started the stage has ended; the run lives on
    else:
        start()
    print(procs[0].pid, flush=True)
    time.sleep(120)
""")


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def gone_within(pids: set[int], seconds: float) -> set[int]:
    """The pids still alive after ``seconds`` (an orphan killed but not yet reaped counts as gone)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return set()
        time.sleep(0.05)
    return {p for p in pids if alive(p)}


def stage_report(log: Path, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines() if log.exists() else []:
            if line.startswith("{"):
                return json.loads(line)
        time.sleep(0.05)
    raise AssertionError(f"the stand-in stage never reported:\n{log.read_text() if log.exists() else ''}")


def start_run(tmp_path: Path, thread: bool = False, sleep_before_arming: float = 0.0, reexec: bool = False):
    log = tmp_path / "stage.log"
    cfg = {"stage_script": STAGE, "log": str(log), "thread": thread, "sleep_before_arming": sleep_before_arming,
           "reexec": reexec, "preload": str(tmp_path / "no-such-blas.so")}
    run = subprocess.Popen([sys.executable, "-c", RUN, json.dumps(cfg)], stdout=subprocess.PIPE, text=True)
    stage_pid = int(run.stdout.readline())
    return run, stage_pid, log


def kill(run: subprocess.Popen) -> None:
    run.kill()  # kill -9 the run alone (the stage is in its own session anyway)
    run.wait()
    run.stdout.close()


@pytest.mark.parametrize("thread", [False, True], ids=["main-thread", "other-thread"])
def test_stage_dies_with_the_run(tmp_path, thread):
    run, stage, log = start_run(tmp_path, thread=thread)
    try:
        rep = stage_report(log)
        assert rep["pid"] == stage and rep["lifeline"] is not None
        # PDEATHSIG only where the starting thread lasts as long as the run; the lifeline always
        assert rep["parent_pid"] == (None if thread else str(run.pid))
        time.sleep(0.5)
        assert alive(stage), "the stage died while its run lives (with the thread that started it?)"
        kill(run)
        assert not gone_within({stage}, 5), "the stage outlived its killed run"
    finally:
        run.kill()
        if alive(stage):
            os.kill(stage, signal.SIGKILL)


@pytest.mark.parametrize("thread", [False, True], ids=["main-thread", "other-thread"])
def test_run_killed_before_the_stage_armed(tmp_path, thread):
    """The run dies while its stage is still importing: the stage ends as soon as it arms."""
    run, stage, log = start_run(tmp_path, thread=thread, sleep_before_arming=1.5)
    try:
        kill(run)
        assert alive(stage)  # still "importing"
        assert not gone_within({stage}, 10), "the stage outlived its killed run"
        assert not [line for line in log.read_text().splitlines() if line.startswith("{")], \
            "the stage went on past arming"
    finally:
        if alive(stage):
            os.kill(stage, signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the BLAS re-exec happens on Linux only")
@pytest.mark.parametrize("thread", [False, True], ids=["main-thread", "other-thread"])
def test_blas_reexec_keeps_the_tie(tmp_path, thread):
    run, stage, log = start_run(tmp_path, thread=thread, reexec=True)
    try:
        rep = stage_report(log)
        assert rep["pid"] == stage and str(tmp_path / "no-such-blas.so") in rep["preload"]  # it did restart
        assert rep["lifeline"] is not None and rep["parent_pid"] == (None if thread else str(run.pid))
        kill(run)
        assert not gone_within({stage}, 5), "the re-executed stage outlived its killed run"
    finally:
        run.kill()
        if alive(stage):
            os.kill(stage, signal.SIGKILL)


def test_a_stage_run_by_hand_is_tied_to_nothing(tmp_path, monkeypatch):
    """Without the run's variables (`ltx2 stage` by hand), die_with_parent arms nothing."""
    monkeypatch.delenv("LTX2_PARENT_PID", raising=False)
    monkeypatch.delenv("LTX2_LIFELINE_FD", raising=False)
    code = ("import threading; from ltx2.stages.contract import die_with_parent; die_with_parent(); "
            "print([t.name for t in threading.enumerate()])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "ltx2-lifeline" not in r.stdout


def test_stages_use_the_light_entry():
    cmd = stage_command("decode", ["--out", "x.zarr"])
    assert cmd[1:4] == ["-m", "ltx2.cli.stage_entry", "decode"]


def test_a_finished_stage_is_not_reaped_by_the_next_start(tmp_path, monkeypatch):
    """A stage that ends while another one is being started keeps its exit code and peak (subprocess polls
    the Popen objects it was handed back when a new one starts: the runner must not hand it one)."""
    monkeypatch.setattr("ltx2.orchestrator.runner.stage_command",
                        lambda name, args: [sys.executable, "-c", "import sys; sys.exit(3)"])
    first = StageProcess("first", [], tmp_path / "first.log").start()
    time.sleep(0.5)  # it has exited (not waited for yet)
    second = StageProcess("second", [], tmp_path / "second.log").start()
    assert first.wait().returncode == 3
    assert second.wait().returncode == 3


# ------------------------------------------------------------------------------------------- a real `ltx2 run`

def stage_children(run: psutil.Process) -> dict[int, str]:
    """pid -> stage name of the run's stage processes now."""
    out = {}
    try:
        for c in run.children(recursive=True):
            try:
                cmd = c.cmdline()
            except psutil.Error:
                continue
            if "ltx2.cli.stage_entry" in cmd:
                out[c.pid] = cmd[cmd.index("ltx2.cli.stage_entry") + 1]
    except psutil.Error:
        pass
    return out


def files(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder``: relative path -> (size, mtime)."""
    out = {}
    for p in folder.rglob("*"):
        try:
            st = p.stat()
        except OSError:
            continue
        if p.is_file():
            out[str(p.relative_to(folder))] = (st.st_size, st.st_mtime_ns)
    return out


def denoise_progress(store: Path) -> int | None:
    """The last step denoise's partial has checkpointed (0: none yet); None: no partial (or mid-write)."""
    for attrs in store.glob("*/*.zarr.partial/zarr.json"):
        try:
            doc = json.loads(attrs.read_text()).get("attributes", {})
        except (OSError, ValueError):
            continue
        if doc.get("producer", {}).get("stage") == "denoise":
            return int(doc["progress"]["step"]) if doc.get("progress") else 0
    return None


MOMENTS = {
    # the first stage process is still starting (importing)
    "text-encode-start": lambda names, store: "text-encode" in names,
    # the denoise process has just been started
    "denoise-start": lambda names, store: "denoise" in names,
    # denoise has opened its partial but not checkpointed a step: loading the transformer or in step 1
    "denoise-before-first-step": lambda names, store: "denoise" in names and denoise_progress(store) == 0,
    # denoise is between checkpoints (each step slowed down)
    "denoise-mid-step": lambda names, store: "denoise" in names and (denoise_progress(store) or 0) >= 1,
}


@pytest.mark.slow
@pytest.mark.parametrize("moment", list(MOMENTS))
def test_killed_run_leaves_no_stage_process(tmp_path, moment):
    job = yaml.safe_load(EXAMPLE.read_text())
    job.update(output=str(tmp_path / "out.mp4"), work_dir=str(tmp_path / "work"))
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    store = Path(os.environ["LTX2_STORE"])  # this test's own, empty: every stage runs
    env = {**os.environ, "LTX2_TEST_STEP_DELAY": "3"}  # denoise cannot finish while the test looks
    proc = subprocess.Popen([sys.executable, "-m", "ltx2.cli.main", "run", str(tmp_path / "job.yaml")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run = psutil.Process(proc.pid)
    seen: dict[int, str] = {}
    reached = False
    try:
        deadline = time.monotonic() + 240
        while not reached and time.monotonic() < deadline and proc.poll() is None:
            seen |= stage_children(run)
            reached = MOMENTS[moment](set(stage_children(run).values()), store)
            time.sleep(0.02)
        assert reached and proc.poll() is None, f"the run never reached the moment {moment}"
        seen |= stage_children(run)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        time.sleep(0.2)
        at_kill = files(store)
        assert seen, "no stage process was seen"
        left = gone_within(set(seen), 2)
        assert not left, f"stage processes outlived the killed run: {[seen[p] for p in left]}"
        time.sleep(1)
        assert files(store) == at_kill, "a stage wrote to the store after its run was killed"
    finally:
        proc.kill()
        for pid in seen:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
