"""Where an artifact's files live, and how writes to them are made durable and atomic.

``NAME.zarr`` is a finished artifact; ``NAME.zarr.partial`` is one being written (or left by a
crash); ``NAME.zarr.lock`` is the lock file runs take before writing it.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

PARTIAL_SUFFIX = ".partial"
LOCK_SUFFIX = ".lock"


def partial_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + PARTIAL_SUFFIX)


def lock_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + LOCK_SUFFIX)


def is_partial_name(path: str | Path) -> bool:
    return Path(path).name.endswith(PARTIAL_SUFFIX)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    # A rename or a new directory entry is durable only once its directory is synced.
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the rename is still atomic
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file, then every directory (deepest first), under ``root``."""
    if not root.exists():
        return
    dirs = []
    for dirpath, _, filenames in os.walk(root):
        dirs.append(Path(dirpath))
        for f in filenames:
            fsync_file(Path(dirpath) / f)
    for d in reversed(dirs):
        fsync_dir(d)


def remove_tree(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def remove_stray_temp_files(root: Path) -> None:
    """Zarr writes each file as ``<name>.<uuid>.partial`` then renames it; a kill leaves the temp."""
    for dirpath, _, filenames in os.walk(root):
        for f in filenames:
            if f.endswith(PARTIAL_SUFFIX):
                (Path(dirpath) / f).unlink(missing_ok=True)


def replace_dir(src: Path, dst: Path) -> None:
    """Move the finished directory ``src`` to ``dst``, replacing whatever is at ``dst``.

    rename(2) cannot replace a non-empty directory, so an existing target is first renamed
    aside, then removed. A crash in between leaves no ``dst`` but a complete ``src`` (which the
    resumable writer simply renames again) and a stale side copy (which the next write removes).
    """
    for stale in dst.parent.glob(dst.name + ".stale-*"):
        remove_tree(stale)
    aside = None
    if dst.exists() or dst.is_symlink():
        aside = dst.with_name(f"{dst.name}.stale-{uuid.uuid4().hex[:8]}")
        os.rename(dst, aside)
    os.rename(src, dst)
    fsync_dir(dst.parent)
    if aside is not None:
        remove_tree(aside)
