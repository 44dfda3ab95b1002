"""What a run does with the content-addressed store: where each stage's output lives, when it is reused,
and how the work folder and the job's output are pointed at it.

Every stage writes its output into the store under its cache key (``STORE/ab/abcd....zarr``, the video
``STORE/ab/abcd....mp4``); a key already there is reused, whichever job or work folder made it, so a
seed A -> B -> A runs nothing the third time and two jobs with one prompt share one text encoding.
After a run uses an entry, ``work/NAME.zarr`` is a symlink to it (replaced atomically) and the job's
``output`` is a hard link to (or a copy of) the stored video, with its sidecar.

Where the store is: the job's ``store:`` folder, else ``$LTX2_STORE``, else ``~/.cache/ltx2/store``.

A work folder from before the store (real artifact folders in it), or one whose links point into
another store, still counts: an output found there with the planned key (hashes verified) is
brought into the store (moved, or copied from another store) instead of being computed again.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ltx2.artifacts_schema import ArtifactError, ArtifactLock, open_artifact
from ltx2.artifacts_schema.content_store import ContentStore
from ltx2.artifacts_schema.files import (copy_tree_into, partial_path, place_file, remove_tree,
                                         replace_with_symlink)

from .graph import Stage
from .job import Job

__all__ = ["DEFAULT_STORE", "store_root", "open_store", "entry_path", "named_path", "export_sidecar",
           "cached_state", "reuse_state", "Claim", "claim", "publish", "discard"]

DEFAULT_STORE = Path("~/.cache/ltx2/store")
STORE_ENV = "LTX2_STORE"


def store_root(job: Job | None = None) -> Path:
    """The job's store folder, else $LTX2_STORE, else ~/.cache/ltx2/store (absolute)."""
    given = getattr(job, "store", None) if job is not None else None
    if given is None:
        given = os.environ.get(STORE_ENV) or DEFAULT_STORE
    return Path(given).expanduser().resolve()


def open_store(job: Job | None = None) -> ContentStore:
    return ContentStore(store_root(job))


def export_sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".ltx2.json")


def entry_path(store: ContentStore, stage: Stage, key: str) -> Path:
    """Where ``stage``'s output with ``key`` lives in the store."""
    return store.entry(key, ".mp4" if stage.name == "export" else ".zarr")


def named_path(stage: Stage, work: Path) -> Path:
    """The name people see: ``work/NAME.zarr`` (a link into the store), or for export the job's output."""
    return stage.output_path(work)


def cached_state(stage_name: str, out: Path, key: str) -> tuple[bool, str]:
    """(reusable, why not) for a stage output at ``out``: a finished artifact (hashes verified) or video
    (sidecar) carrying ``key``."""
    if stage_name == "export":
        side = export_sidecar(out)
        if not (out.exists() and side.exists()):
            return False, "not made yet"
        try:
            ok = json.loads(side.read_text()).get("cache_key") == key
        except (OSError, ValueError):
            ok = False
        return ok, "" if ok else "made from other inputs"
    if not out.exists():
        return False, "partial: will resume" if partial_path(out).exists() else "not made yet"
    try:
        art = open_artifact(out)
        if art.cache_key != key:  # checked before the hashes: no need to read another key's bytes
            return False, "made from other inputs"
        art.verify()
    except ArtifactError as e:
        return False, f"unusable ({e.reason}): will recompute"
    return True, ""


def _importable(stage: Stage, named: Path, entry: Path, key: str) -> bool:
    """True when the work folder (or the output) holds a finished ``key`` output the store lacks."""
    if stage.name != "export" and named.is_symlink() and named.resolve() == entry.resolve():
        return False  # it is the store entry itself
    if stage.name == "export" and named.exists() and entry.exists() and os.path.samefile(named, entry):
        return False
    return cached_state(stage.name, named, key)[0]


def reuse_state(store: ContentStore, stage: Stage, work: Path, key: str) -> tuple[bool, str]:
    """(reusable, why not) for ``stage`` with ``key``, changing nothing (for `ltx2 plan`)."""
    ok, why = cached_state(stage.name, entry_path(store, stage, key), key)
    if not ok and _importable(stage, named_path(stage, work), entry_path(store, stage, key), key):
        return True, ""
    return ok, why


def discard(entry: Path) -> None:
    for p in (entry, partial_path(entry)):
        remove_tree(p)
    if entry.suffix == ".mp4":
        export_sidecar(entry).unlink(missing_ok=True)


def _import(stage: Stage, named: Path, entry: Path) -> None:
    """Bring the finished output at ``named`` into the store at ``entry``."""
    discard(entry)  # a stale partial or a broken entry under this key
    if stage.name == "export":
        place_file(named, entry)
        place_file(export_sidecar(named), export_sidecar(entry))
    else:
        # a real folder of this work folder moves; one linked from elsewhere (another store) is copied
        copy_tree_into(named.resolve(), entry, move=not named.is_symlink())


@dataclass
class Claim:
    reused: bool
    why: str = ""  # why it runs ("not made yet", "forced", ...), or how it was reused


def claim(store: ContentStore, stage: Stage, work: Path, key: str, forced: bool) -> Claim:
    """Decide whether ``stage`` runs, under the store entry's lock: reuse the entry (or bring in one found
    in the work folder), or clear the way for the stage (a forced or broken entry is discarded; a partial
    stays for the stage to resume). The work folder's link is updated for a reused entry.

    When another process holds the lock (a concurrent run computing this very key), the stage is started
    anyway: it waits for the lock itself, then finds the entry made and reuses it."""
    entry = entry_path(store, stage, key)
    lock = ArtifactLock(entry, timeout=None if forced else 0)
    try:
        lock.acquire()
    except ArtifactError:
        return Claim(False, "being made by another run: waiting for it")
    try:
        if forced:
            discard(entry)
            return Claim(False, "forced")
        ok, why = cached_state(stage.name, entry, key)
        if ok:
            publish(store, stage, work, key)
            return Claim(True)
        named = named_path(stage, work)
        if _importable(stage, named, entry, key):
            _import(stage, named, entry)
            publish(store, stage, work, key)
            return Claim(True, "brought into the store from " + str(named))
        if why.startswith("unusable") or why == "made from other inputs":
            discard(entry)
        return Claim(False, why)
    finally:
        lock.release()


def publish(store: ContentStore, stage: Stage, work: Path, key: str) -> None:
    """Point the names people use at the entry: ``work/NAME.zarr`` -> the store, or the video (and its
    sidecar) at the job's output."""
    entry, named = entry_path(store, stage, key), named_path(stage, work)
    if stage.name != "export":
        replace_with_symlink(named, entry)
        stale = partial_path(named)  # left in the work folder by a run from before the store
        if stale.is_dir() and not stale.is_symlink():
            remove_tree(stale)
        return
    side = export_sidecar(named)
    if named.exists() and os.path.samefile(named, entry) and cached_state("export", named, key)[0]:
        return
    side.unlink(missing_ok=True)  # the old sidecar must not vouch for a file being replaced
    place_file(entry, named)
    tmp = side.with_name(f"{side.name}.{os.getpid()}.tmp")
    tmp.write_bytes(export_sidecar(entry).read_bytes())
    os.replace(tmp, side)
