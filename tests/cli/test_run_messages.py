"""What `ltx2 run` says after a failure: run again only where that can help (an interruption, a crash)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ltx2.cli.run import advice
from ltx2.orchestrator.execute import RunFailed, RunManifest, StageRecord
from ltx2.orchestrator.job import parse_job

AGAIN = "run the same command again to continue"


@pytest.mark.parametrize("code, says, exit_code", [
    (2, "running again will not help: change what the error names (in job.yaml", 2),
    (75, "running again will not help: raise memory_budget in job.yaml", 75),
    (1, "decode failed with a bug in ltx2 (exit 1): running again will not help", 1),
])
def test_a_failure_a_rerun_cannot_fix_says_what_to_change(tmp_path: Path, code: int, says: str,
                                                          exit_code: int) -> None:
    job = parse_job({"prompt": "a fox", "work_dir": "work"}, base_dir=tmp_path)
    ran = RunManifest("job.yaml", str(job.output), [StageRecord("text-encode", "k", "computed")])
    e = RunFailed("decode", "it failed", code, ran)
    text = advice(e, job, Path("job.yaml"))
    assert says in text and AGAIN not in text and e.exit_code == exit_code
    assert "finished stages are kept" in text
    if code == 1:
        assert str(tmp_path / "work" / "logs" / "decode.log") in text
    nothing = advice(RunFailed("decode", "refused", code, RunManifest("job.yaml", str(job.output))), job,
                     Path("job.yaml"))
    assert "nothing ran" in nothing and "finished stages are kept" not in nothing


def test_an_interruption_or_a_crash_says_run_again(tmp_path: Path) -> None:
    job = parse_job({"prompt": "a fox", "work_dir": "work"}, base_dir=tmp_path)
    for signal_code in (-9, -15):  # killed (out of memory, or by hand), terminated
        e = RunFailed("denoise", "denoise died from signal SIGKILL", signal_code, RunManifest("job.yaml", ""))
        text = advice(e, job, Path("job.yaml"))
        assert AGAIN in text and "continues from its last checkpoint" in text and e.exit_code == 1
