"""What a run does with the content-addressed store: where each stage's output lives, when it is reused,
and how the work folder and the job's output are pointed at it.

Every stage writes its output into the store under its cache key (``STORE/ab/abcd....zarr``, a file
output such as the video ``STORE/ab/abcd....mp4``); a key already there is reused, whichever job or work folder made it, so a
seed A -> B -> A runs nothing the third time and two jobs with one prompt share one text encoding.
After a run uses an entry, ``work/NAME.zarr`` is a symlink to it (replaced atomically) and the job's
``output`` (and the preview) is a hard link to (or a copy of) the stored file, with its sidecar.
A file output is reused only while it has the size and sha256 its sidecar recorded (stages/base.py): a
damaged copy at the job's output is delivered again from the store, and a damaged store entry (a hard link
edited in place damages both) is recomputed.

Where the store is: the job's ``store:`` folder, else ``$LTX2_STORE``, else ``~/.cache/ltx2/store``.

A work folder from before the store (real artifact folders in it), or one whose links point into
another store, still counts: an output found there with the planned key (hashes verified) is
brought into the store (moved, or copied from another store) instead of being computed again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ltx2.artifacts_schema import ArtifactError, ArtifactLock
from ltx2.artifacts_schema.content_store import ContentStore
from ltx2.artifacts_schema.files import (copy_tree_into, partial_path, place_file, remove_tree,
                                         replace_with_symlink)
from ltx2.stages.base import cached_state as output_state
from ltx2.stages.base import sidecar

from .graph import Stage
from .job import Job

__all__ = ["DEFAULT_STORE", "store_root", "open_store", "entry_path", "named_path", "cached_state", "reuse_state",
           "Claim", "claim", "publish", "discard"]

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


def _is_file(stage: Stage) -> bool:
    """A file output (export's video, the preview's PNG), stored with its sidecar; else a Zarr artifact."""
    return stage.definition.output_kind is None


def entry_path(store: ContentStore, stage: Stage, key: str) -> Path:
    """Where ``stage``'s output with ``key`` lives in the store."""
    return store.entry(key, Path(stage.output).suffix if _is_file(stage) else ".zarr")


def named_path(stage: Stage, work: Path) -> Path:
    """The name people see: ``work/NAME.zarr`` (a link into the store), or a file output's path in the job."""
    return stage.output_path(work)


def cached_state(stage: Stage, out: Path, key: str) -> tuple[bool, str]:
    """(reusable, why not) for ``stage``'s output at ``out``: a finished artifact (hashes verified) or file
    (sidecar) carrying ``key``."""
    return output_state(stage.definition, out, key)


def _importable(stage: Stage, named: Path, entry: Path, key: str) -> bool:
    """True when the work folder (or the output) holds a finished ``key`` output the store lacks."""
    if not _is_file(stage) and named.is_symlink() and named.resolve() == entry.resolve():
        return False  # it is the store entry itself
    if _is_file(stage) and named.exists() and entry.exists() and os.path.samefile(named, entry):
        return False
    return cached_state(stage, named, key)[0]


def reuse_state(store: ContentStore, stage: Stage, work: Path, key: str) -> tuple[bool, str]:
    """(reusable, why not) for ``stage`` with ``key``, changing nothing (for `ltx2 plan`)."""
    ok, why = cached_state(stage, entry_path(store, stage, key), key)
    if not ok and _importable(stage, named_path(stage, work), entry_path(store, stage, key), key):
        return True, ""
    return ok, why


def discard(entry: Path) -> None:
    for p in (entry, partial_path(entry)):
        remove_tree(p)
    sidecar(entry).unlink(missing_ok=True)  # a file output's record (none for an artifact)


def _import(stage: Stage, named: Path, entry: Path) -> None:
    """Bring the finished output at ``named`` into the store at ``entry``."""
    discard(entry)  # a stale partial or a broken entry under this key
    if _is_file(stage):
        place_file(named, entry)
        place_file(sidecar(named), sidecar(entry))
    else:
        # a real folder of this work folder moves; one linked from elsewhere (another store) is copied
        copy_tree_into(named.resolve(), entry, move=not named.is_symlink())


@dataclass
class Claim:
    reused: bool
    why: str = ""  # why it runs ("not made yet", "forced", ...), or how it was reused


def claim(store: ContentStore, stage: Stage, work: Path, key: str, forced: bool) -> Claim:
    """Decide whether ``stage`` runs, under the store entry's lock: reuse the entry (or bring in one found
    in the work folder), or let the stage run. Nothing finished is discarded here: the stage replaces the
    entry only once its new output is complete (a forced one runs with ``--recompute``), so a stage that fails
    leaves the finished entry, and the work folder's link to it, as they were. A forced stage starts afresh
    (its partial goes); otherwise a partial stays for the stage to resume. The work folder's link is updated
    for a reused entry.

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
            remove_tree(partial_path(entry))
            return Claim(False, "forced")
        ok, why = cached_state(stage, entry, key)
        if ok:
            publish(store, stage, work, key)
            return Claim(True)
        named = named_path(stage, work)
        if _importable(stage, named, entry, key):
            _import(stage, named, entry)
            publish(store, stage, work, key)
            return Claim(True, "brought into the store from " + str(named))
        return Claim(False, why)  # a broken entry is replaced when the stage's new output is complete
    finally:
        lock.release()


def publish(store: ContentStore, stage: Stage, work: Path, key: str) -> None:
    """Point the names people use at the entry: ``work/NAME.zarr`` -> the store, or a file output (and its
    sidecar) at its path in the job."""
    entry, named = entry_path(store, stage, key), named_path(stage, work)
    if not _is_file(stage):
        replace_with_symlink(named, entry)
        stale = partial_path(named)  # left in the work folder by a run from before the store
        if stale.is_dir() and not stale.is_symlink():
            remove_tree(stale)
        return
    side = sidecar(named)
    if named.exists() and os.path.samefile(named, entry) and cached_state(stage, named, key)[0]:
        return  # already delivered, and intact (its size and hash checked against its sidecar)
    side.unlink(missing_ok=True)  # the old sidecar must not vouch for a file being replaced
    place_file(entry, named)
    tmp = side.with_name(f"{side.name}.{os.getpid()}.tmp")
    tmp.write_bytes(sidecar(entry).read_bytes())
    os.replace(tmp, side)
