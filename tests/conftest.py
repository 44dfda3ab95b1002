"""Session plumbing for every test folder: the tiny model made once per session, the slow modules scheduled first.

The suite runs in parallel (pytest-xdist, `--dist loadfile`: a module and its module-scoped renders stay on one
worker). Workers share the tiny model folder ($LTX2_TINY_DIR or ~/.cache/ltx2/tiny), which the test modules
and the `ltx2 run` subprocesses all ask for: ``ensure_tiny_model`` is safe when several processes race, but each
would generate its own copy, so the first worker makes it under a lock and the others find it made.
The example job's render, which several modules read, is made once per session the same way.
Every test gets its own artifact store ($LTX2_STORE), so no test shares results with another or writes into
~/.cache/ltx2/store.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from ltx2.models.tiny import ensure_tiny_model

from support import EXAMPLE, ltx2


def _session_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder every worker of this session shares (xdist gives each worker its own basetemp under it)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@contextmanager
def session_lock(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[None]:
    """Held by one worker of this session at a time."""
    with open(_session_root(tmp_path_factory) / f"{name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@pytest.fixture(scope="session", autouse=True)
def _tiny_model_made_once(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    with session_lock(tmp_path_factory, "tiny-model"):
        return ensure_tiny_model()


@pytest.fixture(scope="session")
def example_render(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/tiny.yaml rendered by `ltx2 run` once per session, whichever worker asks first: a folder holding
    job.yaml, out.mp4 and work/ (the artifacts and manifest.json). Tests only read it, except that
    test_pipeline runs it again in place (everything reused: only its manifest is rewritten)."""
    folder = _session_root(tmp_path_factory) / "example-render"
    with session_lock(tmp_path_factory, "example-render"):
        if not (folder / "rendered").exists():  # a worker that died mid-render left no mark: run (resume) it
            folder.mkdir(exist_ok=True)
            job = yaml.safe_load(EXAMPLE.read_text())
            job.update(output=str(folder / "out.mp4"), work_dir=str(folder / "work"))
            (folder / "job.yaml").write_text(yaml.safe_dump(job))
            # its own artifact store where the orchestrator keeps one ($LTX2_STORE): never a store another
            # test or session could have filled, so every stage of this render is computed
            ltx2("run", str(folder / "job.yaml"), env={"LTX2_STORE": str(folder / "store")})
            (folder / "rendered").touch()
    return folder


@pytest.fixture(scope="module", autouse=True)
def _module_store(tmp_path_factory):
    """One store for a module's own module-scoped renders (set up before them: autouse goes first)."""
    old = os.environ.get("LTX2_STORE")
    os.environ["LTX2_STORE"] = str(tmp_path_factory.mktemp("store"))
    yield
    if old is None:
        os.environ.pop("LTX2_STORE", None)
    else:
        os.environ["LTX2_STORE"] = old


@pytest.fixture(autouse=True)
def _store(_module_store, tmp_path_factory, monkeypatch) -> None:
    """Each test its own store: what it computes is computed, never found made by another test."""
    monkeypatch.setenv("LTX2_STORE", str(tmp_path_factory.mktemp("store")))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Modules holding slow tests first, the slowest first (their count of slow tests as the measure), the rest
    in collection order; the order within a module is kept. With `--no-loadscope-reorder` xdist hands the
    modules out in this order, so no worker starts a long render module when the others are nearly done."""
    def module(item: pytest.Item) -> str:
        return item.nodeid.split("::", 1)[0]

    slow: dict[str, int] = {}
    for item in items:
        slow[module(item)] = slow.get(module(item), 0) + (item.get_closest_marker("slow") is not None)
    first = {name: i for i, name in enumerate(slow)}
    items.sort(key=lambda item: (-slow[module(item)], first[module(item)]))
