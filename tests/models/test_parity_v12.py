"""Every network implemented for the v1.2.0 fixtures equals the official v1.2.0 code on both draws
(../shared/oracle/fixtures-v12 and fixtures-v12-check; see tests/support.py for where they are looked for)."""

from __future__ import annotations

import pytest

from support import v12_fixture_sets

from ltx2.parity import CHECKS_V12, oracle_version, run_fixture


def test_the_v12_fixture_sets_are_there() -> None:
    sets = v12_fixture_sets()  # skips (one line naming the folder) or, under CI=true, fails when absent
    assert all(oracle_version(s) == "1.2.0" for s in sets)


@pytest.mark.parametrize("name", sorted(CHECKS_V12))
@pytest.mark.parametrize("draw", [0, 1], ids=["fixtures-v12", "fixtures-v12-check"])
def test_component_matches_the_v12_reference(name: str, draw: int) -> None:
    sets = v12_fixture_sets()
    if draw >= len(sets):
        pytest.skip("only one v1.2.0 fixture folder given")
    results = run_fixture(sets[draw], name)
    assert results, f"{name}: the check compared nothing"
    bad = [r for r in results if r.status != "pass"]
    assert not bad, "\n".join(f"{r.fixture}/{r.output}: {r.status} err={r.rel_err} tol={r.tol} {r.detail}" for r in bad)
