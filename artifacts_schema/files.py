"""Where an artifact's files live, and how writes to them are made durable and atomic.

``NAME.zarr`` is a finished artifact; ``NAME.zarr.partial`` is one being written (or left by a
crash); ``NAME.zarr.lock`` is the lock file runs take before writing it.
"""

from __future__ import annotations

import errno
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


def _temp_name(path: Path) -> Path:
    # unique per process and call: two runs placing the same name never share a temporary
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


def replace_with_symlink(link: Path, target: Path) -> None:
    """Make ``link`` a symlink to ``target`` atomically (a new link renamed over the old name).

    A real directory at ``link`` (a work folder from before the store) is removed first: rename(2)
    cannot put a link in place of a directory."""
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_dir() and not link.is_symlink():
        remove_tree(link)
    tmp = _temp_name(link)
    os.symlink(target, tmp)
    try:
        os.replace(tmp, link)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def place_file(src: Path, dst: Path) -> None:
    """Put the file ``src`` at ``dst`` atomically: a hard link when both are on one filesystem, else a copy
    (to a temporary name first, so ``dst`` is never seen half written)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(dst)
    try:
        try:
            os.link(src, tmp)
        except OSError:  # another filesystem, or links not allowed there
            shutil.copyfile(src, tmp)
            fsync_file(tmp)
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(dst.parent)


def copy_tree_into(src: Path, dst: Path, move: bool = False) -> None:
    """Put the finished directory ``src`` at the new name ``dst`` (which must not exist): copied under a
    temporary name, then renamed, so ``dst`` is never seen half written. With ``move``, ``src`` is renamed
    instead when both are on one filesystem (else copied, then removed)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if move:
        try:
            os.rename(src, dst)
            fsync_dir(dst.parent)
            return
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
    tmp = _temp_name(dst)
    try:
        shutil.copytree(src, tmp, symlinks=False)
        fsync_tree(tmp)
        os.rename(tmp, dst)
    except BaseException:
        remove_tree(tmp)
        raise
    fsync_dir(dst.parent)
    if move:
        remove_tree(src)
