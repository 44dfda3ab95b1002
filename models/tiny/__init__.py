"""The embedded `tiny` LTX-2 model: generated on first use, deterministically, in the real file layouts.

``ensure_tiny_model()`` makes (once) a folder holding what a real installation holds, at toy sizes:
the single-file checkpoint with its config metadata (transformer, text connectors and projection,
video VAE, audio VAE, vocoder), the x2 spatial and x2 temporal latent upsamplers, the distilled LoRA
and a Gemma-3 folder (config.json, sharded weights with their index, tokenizer files). Every real loader reads
them exactly as it reads the official files, so the whole pipeline runs end to end in seconds.
The weights are random: what the tiny model renders is noise.

``ensure_tiny_model(variant="tiny-2.3")`` makes the LTX-2.3 variant the same way, in the real 2.3 layout, in
its own folder beside the first (``<tiny dir>-2.3``); its checkpoint's ``model_version`` is "tiny-2.3".

Safe against several processes at once: each writes into its own temporary folder next to the
target and renames it into place; the first rename wins and the others discard their copy.
Only a missing or empty folder, or one this generator wrote (its manifest), is ever (re)generated:
$LTX2_TINY_DIR naming a user's file or folder is refused, and what is there is left untouched.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path

from ltx2.spec.errors import BadInputError
from ltx2.spec.layout import TINY_MODELS

from .configs import MODEL_VERSION, TINY_VERSION, VARIANTS

__all__ = ["ensure_tiny_model", "is_current", "default_tiny_dir", "tiny_model_files", "TINY_VERSION",
           "MODEL_VERSION", "MANIFEST", "TinyDirError", "check_tiny_dir", "TINY_MODELS"]


class TinyDirError(BadInputError, FileExistsError):
    """The tiny model's folder ($LTX2_TINY_DIR) names something that is not a tiny model: left alone."""


def default_tiny_dir(variant: str = "tiny") -> Path:
    """Where the tiny model ``variant`` is generated on first use: $LTX2_TINY_DIR, else ~/.cache/ltx2/tiny;
    another variant beside it, in a folder named after it (tiny-2.3: ``<that folder>-2.3``)."""
    env = os.environ.get("LTX2_TINY_DIR")
    base = Path(env).expanduser().resolve() if env else Path.home() / ".cache" / "ltx2" / "tiny"
    return base if variant == "tiny" else base.with_name(base.name + variant.removeprefix("tiny"))


def tiny_model_files(tiny_dir: Path | None = None, variant: str = "tiny") -> dict[str, Path]:
    """Role -> path of each file of the tiny model ``variant`` in ``tiny_dir`` (default: its default folder);
    they may not be generated yet."""
    root = tiny_dir or default_tiny_dir(variant)
    return {role: root / name for role, name in TINY_MODELS[variant].items()}

MANIFEST = "tiny.json"  # written last: its presence with the current version marks a complete folder


def _sizes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != MANIFEST}


def is_current(root: Path, variant: str = "tiny") -> bool:
    """True when ``root`` holds a complete tiny model ``variant`` of this generator version (sizes checked, not
    hashes)."""
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    if manifest.get("version") != TINY_VERSION or manifest.get("model_version") != VARIANTS[variant].model_version:
        return False
    files = manifest.get("files", {})
    names = TINY_MODELS[variant]
    # a folder made before a file joined TINY_FILES (the temporal upsampler) lacks it: regenerate (the files
    # it has come out byte-identical, each tensor being seeded by its own key)
    if not all(name in files or any(f.startswith(name + "/") for f in files) for name in names.values()):
        return False
    try:
        return all((root / name).stat().st_size == size for name, size in files.items()) and bool(files)
    except OSError:
        return False


def _ours(root: Path) -> bool:
    """True for a folder this generator wrote (its manifest, of any version), or an empty one."""
    try:
        if not any(root.iterdir()):
            return True
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and "version" in manifest and isinstance(manifest.get("files"), dict)


def check_tiny_dir(root: Path | None = None) -> Path:
    """``root`` (default: ``default_tiny_dir()``) when the tiny model may be generated there: it is missing,
    an empty folder or a tiny model's folder. Anything else is a TinyDirError; nothing is touched."""
    root = Path(root) if root is not None else default_tiny_dir()
    fix = "point $LTX2_TINY_DIR at a new or empty folder (or leave it unset: ~/.cache/ltx2/tiny)"
    if root.is_symlink() and not root.exists():
        raise TinyDirError(f"{root} (the tiny model's folder) is a broken symlink: it is left alone; {fix}")
    if root.exists() and not root.is_dir():
        raise TinyDirError(f"{root} (the tiny model's folder) is a file, not a folder: it is left alone; {fix}")
    if root.is_dir() and not _ours(root):
        raise TinyDirError(f"{root} exists and does not hold a tiny model (no {MANIFEST}): it is left alone; {fix}")
    for above in root.parents:
        if above.exists():
            if not above.is_dir():
                raise TinyDirError(f"{root} (the tiny model's folder) cannot be made: {above} is a file; {fix}")
            break
    return root


def _install(tmp: Path, root: Path, variant: str = "tiny") -> None:
    """Rename ``tmp`` to ``root``; a stale ``root`` is moved aside first; a current one (another process
    finished first) wins and ``tmp`` is discarded."""
    for _ in range(3):
        try:
            os.rename(tmp, root)  # atomic; fails if root exists and is not empty
            return
        except OSError:
            if is_current(root, variant):
                shutil.rmtree(tmp, ignore_errors=True)
                return
            check_tiny_dir(root)  # something else appeared meanwhile: never moved away
            stale = root.parent / f".{root.name}.stale-{uuid.uuid4().hex[:8]}"
            try:
                os.rename(root, stale)
            except FileNotFoundError:
                continue
            shutil.rmtree(stale, ignore_errors=True)
    raise OSError(f"could not install the tiny model into {root}: another process keeps replacing it")


def ensure_tiny_model(root: Path | None = None, variant: str = "tiny") -> dict[str, Path]:
    """Role -> path of each file of the tiny model ``variant`` ("tiny" or "tiny-2.3", spec.layout.TINY_MODELS),
    generating the folder first if it is missing, incomplete or from another generator version. ``root`` (the
    variant's own folder) defaults to ``default_tiny_dir(variant)``."""
    if variant not in VARIANTS:
        raise ValueError(f"no tiny model {variant!r}; there are {', '.join(VARIANTS)}")
    root = Path(root) if root is not None else default_tiny_dir(variant)
    files = tiny_model_files(root, variant)
    if is_current(root, variant):
        return files
    check_tiny_dir(root)
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.partial-", dir=root.parent))
    except OSError as e:
        raise TinyDirError(f"{root} (the tiny model's folder) cannot be made: {e}; point $LTX2_TINY_DIR at a "
                           "writable folder") from None
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the installed folder is an ordinary one
    try:
        from .generator import generate  # lazy: the networks (and mlx-lm) load only to generate

        generate(tmp, TINY_MODELS[variant], VARIANTS[variant])
        manifest = {"version": TINY_VERSION, "model_version": VARIANTS[variant].model_version, "files": _sizes(tmp),
                    "note": "random weights generated by ltx2: this model renders noise"}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        _install(tmp, root, variant)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return files
