"""Garbage collection of the store: remove every entry no registered work folder's manifest names.

Each `ltx2 run` registers its work folder in the store (``STORE/refs/``) and lists every planned stage's
key in ``work/manifest.json`` before anything runs. ``collect`` reads those manifests (dropping the
registration of a work folder, or manifest, that no longer exists), keeps the keys they list, and
removes everything else stored (finished artifacts and videos, partials, temporaries) that no running
stage holds locked. Lock files are never removed (see ``artifacts_schema.locking``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ltx2.artifacts_schema import ArtifactError, ArtifactLock
from ltx2.artifacts_schema.content_store import ContentStore, StoreItem
from ltx2.artifacts_schema.locking import is_locked
from ltx2.spec.errors import BadInputError

__all__ = ["GcReport", "GcError", "collect", "referenced_keys"]


class GcError(BadInputError):
    """A registered work folder's manifest cannot be read: what it references is unknown."""


@dataclass
class GcReport:
    removed: list[tuple[StoreItem, int]] = field(default_factory=list)  # (item, bytes): removed, or would be
    in_use: list[StoreItem] = field(default_factory=list)  # unreferenced but locked by a running stage: kept
    kept: int = 0  # referenced keys present in the store
    dropped_refs: list[Path] = field(default_factory=list)  # work folders gone (their registration dropped)

    @property
    def bytes(self) -> int:
        return sum(n for _, n in self.removed)


def referenced_keys(store: ContentStore, report: GcReport, dry_run: bool) -> set[str]:
    keep: set[str] = set()
    for ref, work in store.refs():
        manifest = work / "manifest.json" if work is not None else None
        if manifest is None or not manifest.is_file():
            report.dropped_refs.append(work or ref)
            if not dry_run:
                ref.unlink(missing_ok=True)
            continue
        try:
            m = json.loads(manifest.read_text())
            keep.update(str(k) for k in (m.get("keys") or {}).values())
            keep.update(str(s["key"]) for s in m.get("stages", []) if s.get("key"))
        except (OSError, ValueError, TypeError, AttributeError, KeyError) as e:
            raise GcError(f"{manifest}: cannot be read ({e}), so what it references is unknown; fix or delete it "
                          "(or its work folder), then run gc again") from e
    return keep


def collect(store: ContentStore, dry_run: bool = False) -> GcReport:
    """Remove (with ``dry_run``: only list) every store entry no registered manifest names."""
    report = GcReport()
    keep = referenced_keys(store, report, dry_run)
    for item in store.items():
        if item.key in keep:
            report.kept += 1
            continue
        if dry_run:
            if is_locked(item.lock_target):
                report.in_use.append(item)
            else:
                report.removed.append((item, item.bytes))
            continue
        lock = ArtifactLock(item.lock_target, timeout=0)
        try:
            lock.acquire()
        except ArtifactError:
            report.in_use.append(item)
            continue
        try:
            size = item.bytes
            item.remove()
            report.removed.append((item, size))
        finally:
            lock.release()
    return report
