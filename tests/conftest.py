"""Fixtures every test gets: its own artifact store, so no test shares results with another or writes
into ~/.cache/ltx2/store."""

from __future__ import annotations

import os

import pytest


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
