"""The content-addressed store's layout: one entry per cache key, shared by every job and work folder.

::

    STORE/ab/abcd....zarr            a finished artifact whose cache key is abcd... (64 hex digits)
    STORE/ab/abcd....zarr.partial    the same being written (resumable), beside it
    STORE/ab/abcd....zarr.lock       the lock its writers take (see ``locking``; never deleted)
    STORE/ab/abcd....mp4             an exported video, with its sidecar abcd....mp4.ltx2.json
    STORE/refs/<sha256>.json         one per work folder that ran against this store (what gc reads)

Entries never change once finished: the key is the hash of everything that shaped them, so a key
seen again is reused. Work folders hold named symlinks into the store for people (``work/text.zarr``);
the store's own names are only keys.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .files import LOCK_SUFFIX, remove_tree

__all__ = ["ContentStore", "StoreItem", "is_key"]

_KEY = re.compile(r"[0-9a-f]{64}")
REFS = "refs"


def is_key(text: str) -> bool:
    return bool(_KEY.fullmatch(text))


def _key_of(name: str) -> str | None:
    """The cache key a file name in a shard folder belongs to (temporaries start with a dot)."""
    stem = name.lstrip(".").split(".", 1)[0]
    return stem if is_key(stem) else None


def tree_bytes(path: Path) -> int:
    if path.is_symlink() or not path.is_dir():
        try:
            return path.lstat().st_size
        except OSError:
            return 0
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += (Path(root) / f).lstat().st_size
            except OSError:
                pass
    return total


@dataclass
class StoreItem:
    """Everything in the store under one key (the lock file aside)."""

    key: str
    paths: list[Path]

    @property
    def bytes(self) -> int:
        return sum(tree_bytes(p) for p in self.paths)

    @property
    def lock_target(self) -> Path:
        """The entry path whose lock guards these files (``locking.ArtifactLock`` of it)."""
        for p in self.paths:
            name = p.name.lstrip(".")
            for suffix in (".zarr", ".mp4"):
                if name.startswith(self.key + suffix):
                    return p.with_name(self.key + suffix)
        return self.paths[0].with_name(self.key + ".zarr")

    def remove(self) -> None:
        for p in self.paths:
            remove_tree(p)


class ContentStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def entry(self, key: str, suffix: str = ".zarr") -> Path:
        """Where the output with cache key ``key`` lives (``suffix``: .zarr, or .mp4 for a video)."""
        if not is_key(key):
            raise ValueError(f"not a cache key (64 hex digits): {key!r}")
        return self.root / key[:2] / f"{key}{suffix}"

    # -- the work folders that use the store (gc keeps what their manifests name)

    def ref_path(self, work_dir: Path) -> Path:
        digest = hashlib.sha256(str(Path(work_dir).resolve()).encode()).hexdigest()
        return self.root / REFS / f"{digest}.json"

    def register(self, work_dir: Path) -> Path:
        work_dir = Path(work_dir).resolve()
        ref = self.ref_path(work_dir)
        ref.parent.mkdir(parents=True, exist_ok=True)
        tmp = ref.with_name(f"{ref.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"work_dir": str(work_dir)}))
        os.replace(tmp, ref)
        return ref

    def refs(self) -> list[tuple[Path, Path | None]]:
        """(ref file, registered work folder; None when the ref is unreadable)."""
        folder = self.root / REFS
        out: list[tuple[Path, Path | None]] = []
        for ref in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                out.append((ref, Path(json.loads(ref.read_text())["work_dir"])))
            except (OSError, ValueError, KeyError, TypeError):
                out.append((ref, None))
        return out

    # -- what the store holds

    def items(self) -> list[StoreItem]:
        """Every key the store holds something for (finished, partial, temporaries), lock files left out."""
        by_key: dict[str, StoreItem] = {}
        if not self.root.is_dir():
            return []
        for shard in sorted(self.root.iterdir()):
            if not (shard.is_dir() and re.fullmatch(r"[0-9a-f]{2}", shard.name)):
                continue
            for p in sorted(shard.iterdir()):
                key = _key_of(p.name)
                if key is None or p.name.endswith(LOCK_SUFFIX):
                    continue
                by_key.setdefault(key, StoreItem(key, [])).paths.append(p)
        return list(by_key.values())
