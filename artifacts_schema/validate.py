"""Checks shared by the writer (before finalizing) and the reader (on open).

Each returns a list of problems (empty when fine); the caller raises with its own reason and fix.
"""

from __future__ import annotations

from .kinds import KINDS, ArraySpec, KindSpec
from .records import ArrayRecord


def array_problems(spec: ArraySpec, kind: str, shape: tuple[int, ...], logical: str) -> list[str]:
    problems = []
    if len(shape) != spec.rank:
        problems.append(f"array '{spec.name}' of kind {kind} must have rank {spec.rank} ({spec.doc}), "
                        f"got shape {tuple(shape)}")
    if logical not in spec.dtypes:
        problems.append(f"array '{spec.name}' of kind {kind} must be {' or '.join(spec.dtypes)}, got {logical}")
    return problems


def content_problems(kind: KindSpec, records: dict[str, ArrayRecord], facts: dict) -> list[str]:
    problems = []
    for a in kind.arrays:
        if a.required and a.name not in records:
            problems.append(f"missing array '{a.name}' required by kind {kind.name} ({a.doc})")
    for name, rec in records.items():
        spec = kind.array(name)
        if spec is None:
            problems.append(f"array '{name}' is not part of kind {kind.name} (its arrays: "
                            f"{', '.join(kind.by_name)})")
            continue
        problems += array_problems(spec, kind.name, rec.shape, rec.logical_dtype)
        if rec.time_axis != spec.time_axis:
            problems.append(f"array '{name}' has time axis {rec.time_axis}, kind {kind.name} says {spec.time_axis}")
    for f in kind.facts:
        if f.name not in facts:
            problems.append(f"missing fact '{f.name}' ({f.doc or f.type_names}) required by kind {kind.name}")
        elif not f.accepts(facts[f.name]):
            problems.append(f"fact '{f.name}' is {facts[f.name]!r}, kind {kind.name} wants {f.type_names}")
    if not problems and kind.cross_check is not None:
        problems += kind.cross_check({n: tuple(r.shape) for n, r in records.items()}, facts)
    return problems


def unknown_kind(kind: object) -> str:
    return f"unknown kind {kind!r} (kinds: {', '.join(KINDS)})"
