"""The manifest of a folder written by ``ltx2 convert``: which converted file serves which role.

``manifest.json`` maps roles (the parts a stage reads: ``transformer``, ``gemma``, ``text_embeddings``,
``video_decoder``, ``latent_statistics``, ``audio_decoder``, ``vocoder``, ``spatial_upsampler`` /
``temporal_upsampler``) to file names in the folder, and records the identity of the official files it
was made from and the LoRAs fused into its transformer. Read without MLX, so job validation and
planning stay cheap.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ltx2.spec.errors import BadInputError

MANIFEST = "manifest.json"
FORMAT = "ltx2.converted"


class ManifestError(BadInputError):
    """A folder that is not (or no longer) a complete `ltx2 convert` output."""


@dataclass(frozen=True)
class ConvertedFolder:
    folder: Path
    roles: dict[str, Path]  # role -> converted file
    sources: dict[str, dict]  # "checkpoint" / "gemma" / "upsampler" -> {"file", "identity"}
    loras: list[dict] = field(default_factory=list)  # fused into the transformer: [{"file", "strength", "identity"}]
    bits: int | None = None
    group_size: int | None = None


def read_manifest(folder: str | Path) -> ConvertedFolder:
    """The folder's manifest, with every file it names checked to exist."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise ManifestError(f"{folder} holds no {MANIFEST}: not a folder written by `ltx2 convert` (or the "
                            "conversion did not finish; run it again)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ManifestError(f"{path} is not readable JSON ({e}); run `ltx2 convert` again") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("roles"), dict):
        raise ManifestError(f"{path} is not an `ltx2 convert` manifest (format {data.get('format')!r} expected "
                            f"{FORMAT!r}); run `ltx2 convert` again")
    roles = {str(r): folder / str(name) for r, name in data["roles"].items()}
    missing = sorted({p.name for p in roles.values() if not p.is_file()})
    if missing:
        raise ManifestError(f"{folder}: files named by its manifest are missing: {', '.join(missing)}; run "
                            "`ltx2 convert` again")
    return ConvertedFolder(folder, roles, dict(data.get("sources") or {}), list(data.get("loras") or []),
                           data.get("bits"), data.get("group_size"))
