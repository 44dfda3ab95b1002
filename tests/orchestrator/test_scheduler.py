"""The DAG scheduler and the executor seam: what runs when, within which memory, through which executor."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import pytest
import yaml

from ltx2.models.tiny import ensure_tiny_model
from ltx2.orchestrator.execute import RunFailed, run_job
from ltx2.orchestrator.executor import Executor, LocalExecutor, StageHandle, StageInvocation
from ltx2.orchestrator.job import load_job
from ltx2.orchestrator.planner import plan_job
from ltx2.orchestrator.scheduler import Task, run_dag

from fake_executor import FakeExecutor, FakeHandle, StageWritingExecutor
from support import EXAMPLE, ltx2

GB = 1 << 30


def diamond(reqs: dict[str, int | None], reused: set[str] = frozenset(), log: list | None = None) -> list[Task]:
    """a -> (b, c) -> d, as latents -> (decode, vocode) -> export."""
    def prep(name: str):
        def prepare():
            if log is not None:
                log.append(name)
            return None if name in reused else StageInvocation(name, (), Path(f"{name}.log"), requirement=reqs[name])
        return prepare
    after = {"a": (), "b": ("a",), "c": ("a",), "d": ("b", "c")}
    return [Task(n, after[n], prep(n)) for n in "abcd"]


def dag(tasks: list[Task], budget: int, ex: FakeExecutor):
    """run_dag without sleeping, on a clock that ticks once per reading (times are orders, not seconds)."""
    return run_dag(tasks, budget, ex, poll_s=0, clock=itertools.count().__next__)


def overlap(o1, o2) -> bool:
    return o1.started < o2.ended and o2.started < o1.ended


def test_both_protocols_are_met() -> None:
    assert isinstance(LocalExecutor(), Executor) and isinstance(FakeExecutor(), Executor)
    assert isinstance(FakeHandle(StageInvocation("x", (), Path("x")), 1, 0), StageHandle)


def test_independent_stages_run_together_when_the_budget_holds_both() -> None:
    ex = FakeExecutor(polls={"b": 3, "c": 2})
    res = dag(diamond({"a": 50, "b": 60, "c": 30, "d": 10}), 100, ex)
    o = res.outcomes
    assert res.failed is None and res.max_parallel == 2 and ex.order == ["a", "b", "c", "d"]
    assert overlap(o["b"], o["c"])
    assert o["b"].started >= o["a"].ended and o["d"].started >= max(o["b"].ended, o["c"].ended)
    # beside each other, each may use the budget less the other's requirement; b alone again after c ends
    assert ex.handles["b"].limits == [100 - 30, 100] and ex.handles["c"].limits == [100 - 60]
    assert ex.handles["a"].limits == [100] and ex.handles["d"].limits == [100]


def test_independent_stages_run_one_after_the_other_when_it_does_not() -> None:
    ex = FakeExecutor(polls={"b": 3, "c": 2})
    res = dag(diamond({"a": 50, "b": 60, "c": 30, "d": 10}), 80, ex)
    o = res.outcomes
    assert res.failed is None and res.max_parallel == 1 and ex.order == ["a", "b", "c", "d"]
    assert o["c"].started >= o["b"].ended  # c waited for b: plan order
    assert all(h.limits == [80] for h in ex.handles.values())


def test_a_stage_of_unknown_requirement_runs_alone() -> None:
    ex = FakeExecutor(polls={"b": 3, "c": 2})
    res = dag(diamond({"a": 1, "b": None, "c": 1, "d": 1}), 100, ex)
    assert res.max_parallel == 1 and res.outcomes["c"].started >= res.outcomes["b"].ended


def test_a_ready_stage_that_does_not_fit_is_not_overtaken() -> None:
    after: dict[str, tuple] = {"s": (), "q": (), "r": ()}
    reqs = {"s": 50, "q": 60, "r": 10}
    tasks = [Task(n, after[n], lambda n=n: StageInvocation(n, (), Path(n), requirement=reqs[n])) for n in "sqr"]
    ex = FakeExecutor(polls={"s": 3})
    res = dag(tasks, 100, ex)
    o = res.outcomes
    assert o["q"].started >= o["s"].ended and o["r"].started >= o["s"].ended  # r (10) would fit beside s: waits
    assert overlap(o["q"], o["r"])


def test_reused_stages_start_nothing() -> None:
    ex, log = FakeExecutor(), []
    res = dag(diamond({"a": 1, "b": 1, "c": 1, "d": 1}, reused={"a", "c"}, log=log), 100, ex)
    assert ex.order == ["b", "d"] and log == ["a", "b", "c", "d"]
    assert res.outcomes["a"].run is None and res.outcomes["a"].started is None
    assert res.outcomes["d"].run.ok


def test_a_failure_starts_nothing_new_and_waits_for_the_running() -> None:
    ex, log = FakeExecutor(polls={"b": 1, "c": 4}, codes={"b": 3}), []
    res = dag(diamond({"a": 1, "b": 1, "c": 1, "d": 1}, log=log), 100, ex)
    assert res.failed is not None and res.failed.name == "b" and res.failed.run.returncode == 3
    assert "d" not in log and "d" not in ex.handles  # never prepared, never started
    assert not ex.handles["c"].cancelled and res.outcomes["c"].run.ok  # c ran to its end


def test_an_error_cancels_the_running_stages() -> None:
    ex = FakeExecutor(polls={"b": 10**9})

    def broken():
        raise OSError("disk gone")
    tasks = [Task("a", (), lambda: StageInvocation("a", (), Path("a"), requirement=1)),
             Task("b", (), lambda: StageInvocation("b", (), Path("b"), requirement=1)),
             Task("c", ("a",), broken)]  # prepared once a has ended, while b runs
    with pytest.raises(OSError, match="disk gone"):
        dag(tasks, 100, ex)
    assert ex.handles["b"].cancelled


# ----------------------------------------------------------------------------- run_job through the seam

@pytest.fixture(scope="module")
def tiny() -> None:
    ensure_tiny_model()  # planning reads the weight headers


def job_at(folder: Path, **changes):
    job = yaml.safe_load(EXAMPLE.read_text())
    job.update(output=str(folder / "out.mp4"), work_dir=str(folder / "work"), **changes)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "job.yaml").write_text(yaml.safe_dump(job))
    return load_job(folder / "job.yaml")


def test_run_job_goes_through_the_executor(tiny, tmp_path) -> None:
    job = job_at(tmp_path)
    plans = plan_job(job).plans
    ex = StageWritingExecutor()
    manifest = run_job(job, "job", executor=ex)
    names = [i.stage for i in ex.invocations]
    assert names == ["text-encode", "denoise", "upscale", "refine", "decode", "vocode", "export", "preview"]
    store = Path(os.environ["LTX2_STORE"])
    for inv in ex.invocations:
        assert inv.requirement == plans[inv.stage].total  # the planner's estimate
        assert inv.log_path == tmp_path / "work" / "logs" / f"{inv.stage}.log"
        out = Path(inv.args[inv.args.index("--out") + 1])
        assert out.parent.parent == store  # written into the store, under its key
    assert {s.status for s in manifest.stages} == {"computed"}
    assert all(s.peak_rss == 1 and s.started is not None and s.ended >= s.started for s in manifest.stages)
    # the work folder links each artifact into the store; the video is delivered at the job's output
    for st in manifest.stages[:-2]:
        link = tmp_path / "work" / {"text-encode": "text", "denoise": "stage1", "upscale": "upscaled",
                                    "refine": "latents", "decode": "frames", "vocode": "audio"}[st.name]
        link = link.with_suffix(".zarr")
        assert link.is_symlink() and Path(os.readlink(link)) == store / st.key[:2] / f"{st.key}.zarr"
    keys = {s.name: s.key for s in manifest.stages}
    assert (tmp_path / "out.mp4").read_bytes() == b"file " + keys["export"].encode()
    assert (tmp_path / "out.preview.png").read_bytes() == b"file " + keys["preview"].encode()
    on_disk = json.loads((tmp_path / "work" / "manifest.json").read_text())
    assert on_disk["keys"] == {s.name: s.key for s in manifest.stages} and on_disk["store"] == str(store)


def test_run_job_stops_at_a_failed_stage(tiny, tmp_path) -> None:

    class FailingDecode(StageWritingExecutor):
        def submit(self, inv, on_event=None):
            h = super().submit(inv, on_event)
            h.code = 2 if inv.stage == "decode" else 0
            return h

    ex = FailingDecode()
    with pytest.raises(RunFailed) as err:
        run_job(job_at(tmp_path), "job", executor=ex)
    assert err.value.stage == "decode" and err.value.code == 2
    assert [i.stage for i in ex.invocations][-2:] == ["decode", "vocode"]  # vocode ran beside it; export never
    st = {s.name: s.status for s in err.value.manifest.stages}
    assert st["decode"] == "failed" and st["vocode"] == "computed" and "export" not in st


def _budgets(tmp_path: Path) -> tuple[dict[str, int], int, int]:
    """Estimates of a 768x512x121 untiled job (decode needs much more than vocode), a budget that holds
    decode and vocode together and one that holds each stage alone but not those two together."""

    job = job_at(tmp_path / "probe", width=768, height=512, frames=121, tiling="off", memory_budget="64GB")
    est = {n: p.total for n, p in plan_job(job).plans.items() if p.total is not None}
    alone = max(est.values())
    assert alone < est["decode"] + est["vocode"], est
    return est, est["decode"] + est["vocode"] + 1, alone


@pytest.mark.parametrize("together", [True, False])
def test_decode_and_vocode_overlap_only_when_the_budget_holds_both(tiny, tmp_path, together) -> None:
    est, both, alone = _budgets(tmp_path)
    job = job_at(tmp_path / "run", width=768, height=512, frames=121, tiling="off",
                 memory_budget=both if together else alone)
    ex = StageWritingExecutor()
    run_job(job, "job", executor=ex)
    stages = {s["name"]: s for s in json.loads((tmp_path / "run" / "work" / "manifest.json").read_text())["stages"]}
    d, v = stages["decode"], stages["vocode"]
    assert d["status"] == v["status"] == "computed"
    limits = {i.stage: i.budget_bytes for i in ex.invocations}
    if together:
        assert d["started"] < v["ended"] and v["started"] < d["ended"]  # overlapping in the manifest
        assert limits["decode"] == both - est["vocode"] and limits["vocode"] == both - est["decode"]
    else:
        assert v["started"] >= d["ended"]  # one after the other, in plan order
        assert limits["decode"] == limits["vocode"] == alone


@pytest.mark.slow
def test_a_real_render_runs_decode_and_vocode_together_or_apart_by_the_budget(tiny, tmp_path) -> None:
    """Stage processes on this machine: at 4 GB decode and vocode overlap; rerun (forced) with a budget that
    fits every stage alone but not those two together, they run one after the other."""

    small = dict(width=384, height=256, frames=33, tiling="off")
    job = job_at(tmp_path, **small)  # memory_budget 4GB, as the example
    ltx2("run", str(tmp_path / "job.yaml"))
    m = json.loads((tmp_path / "work" / "manifest.json").read_text())
    s = {r["name"]: r for r in m["stages"]}
    assert s["decode"]["started"] < s["vocode"]["ended"] and s["vocode"]["started"] < s["decode"]["ended"]

    est = {n: p.total for n, p in plan_job(job).plans.items() if p.total is not None}
    alone = max(est.values())
    assert alone < est["decode"] + est["vocode"], est
    job_at(tmp_path, memory_budget=alone, **small)
    ltx2("run", str(tmp_path / "job.yaml"), "--force", "decode", "--force", "vocode")
    m = json.loads((tmp_path / "work" / "manifest.json").read_text())
    s = {r["name"]: r for r in m["stages"]}
    assert {n for n, r in s.items() if r["status"] == "computed"} == {"decode", "vocode", "export", "preview"}
    assert s["vocode"]["started"] >= s["decode"]["ended"]


def test_local_executor_runs_a_stage_and_reports_it(tmp_path) -> None:
    """The local executor on a stage that exits at once (bad input): exit code, message, events, peak."""
    inv = StageInvocation("decode", ("--in", str(tmp_path / "missing.zarr"), "--out", str(tmp_path / "f.zarr")),
                          tmp_path / "decode.log", budget_bytes=4 * GB)
    seen: list[dict] = []
    h = LocalExecutor().submit(inv, seen.append)
    run = h.wait(timeout=120)
    assert h.done() and run is not None
    assert run.returncode == 2 and "missing.zarr" in run.message and run.peak_rss > 0 and run.wall_s > 0
    assert [e["event"] for e in h.events][-1] == "error" and seen == h.events
    assert (tmp_path / "decode.log").exists()


def test_local_executor_cancels_a_stage(tmp_path) -> None:
    inv = StageInvocation("decode", ("--in", str(tmp_path / "missing.zarr"), "--out", str(tmp_path / "f.zarr")),
                          tmp_path / "decode.log")
    h = LocalExecutor().submit(inv)
    h.cancel()  # at once: killed before it gets anywhere
    run = h.wait(timeout=60)
    assert run is not None and run.returncode < 0 and "stopped" in run.message


def test_a_stage_that_exits_0_without_its_output_fails_the_run(tiny, tmp_path) -> None:
    class ForgetfulVocode(StageWritingExecutor):
        def submit(self, inv, on_event=None):
            h = super().submit(inv, on_event)
            if inv.stage == "vocode":
                out = Path(inv.args[inv.args.index("--out") + 1])
                out.rmdir()  # exits 0, writes nothing
            return h

    ex = ForgetfulVocode()
    with pytest.raises(RunFailed) as err:
        run_job(job_at(tmp_path), "job", executor=ex)
    assert err.value.stage == "vocode" and "without writing" in str(err.value)
    assert "export" not in [i.stage for i in ex.invocations]
    assert not (tmp_path / "work" / "audio.zarr").is_symlink()
