"""The dataclasses artifacts exchange at their boundaries, and their JSON form in the group attrs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ArtifactError
from .kinds import time_blocks


@dataclass(frozen=True)
class Producer:
    """The stage that wrote an artifact, and its version (part of the cache key)."""

    stage: str
    version: str

    def to_json(self) -> dict:
        return {"stage": self.stage, "version": self.version}

    @classmethod
    def from_json(cls, d: dict) -> Producer:
        return cls(stage=str(d["stage"]), version=str(d["version"]))


@dataclass
class ArrayRecord:
    """One array's entry in the group attrs ``arrays`` dict (see hashing.py for the hashes)."""

    name: str
    shape: tuple[int, ...]
    logical_dtype: str
    time_axis: int | None
    chunk_time: int
    sha256: str | None = None                 # None until every block is written
    chunk_sha256: list[str] = field(default_factory=list)
    written: int = 0                          # time steps written so far (streamed arrays)
    location: str = ""                        # path inside the group while in a partial

    @property
    def length(self) -> int:
        """Time steps (1 for an array without a time axis)."""
        return 1 if self.time_axis is None else self.shape[self.time_axis]

    @property
    def blocks(self) -> list[tuple[int, int]]:
        return time_blocks(self.time_axis, self.chunk_time, self.shape)

    @property
    def path(self) -> str:
        return self.location or self.name

    def to_json(self, partial: bool = False) -> dict:
        d = {"shape": list(self.shape), "logical_dtype": self.logical_dtype, "time_axis": self.time_axis,
             "chunk_time": self.chunk_time, "sha256": self.sha256, "chunk_sha256": list(self.chunk_sha256)}
        if partial:
            d["written"] = self.written
            d["location"] = self.location
        return d

    @classmethod
    def from_json(cls, name: str, d: dict, where: Path) -> ArrayRecord:
        try:
            rec = cls(name=name, shape=tuple(int(x) for x in d["shape"]), logical_dtype=str(d["logical_dtype"]),
                      time_axis=None if d["time_axis"] is None else int(d["time_axis"]),
                      chunk_time=int(d["chunk_time"]), sha256=d.get("sha256"),
                      chunk_sha256=[str(h) for h in d.get("chunk_sha256", [])],
                      written=int(d.get("written", 0)), location=str(d.get("location", "")))
        except (KeyError, TypeError, ValueError) as e:
            raise ArtifactError(where, f"the attrs entry for array '{name}' is malformed ({e!r})",
                                "delete it and run again", "invalid") from e
        for what, text, plain in (("name", rec.name, True), ("location", rec.location, False)):
            if text and not is_inside(text, single=plain):
                raise ArtifactError(where, f"array {what} {text!r} points outside the artifact (an array lives at a "
                                    "relative path inside its artifact, without '.', '..' or empty parts)",
                                    "delete it and run again", "invalid")
        if rec.time_axis is not None and not 0 <= rec.time_axis < len(rec.shape):
            raise ArtifactError(where, f"array '{name}' has time_axis {rec.time_axis} outside its rank "
                                f"{len(rec.shape)}", "delete it and run again", "invalid")
        return rec


def is_inside(text: str, single: bool = False) -> bool:
    """True for a relative path that stays inside the folder it is joined to (``single``: one name, no '/').

    Judged on the text alone (no '..', '.', empty or absolute parts), so a record can never lead a reader or
    a resumed writer to another artifact's arrays or to a folder a cleanup would then delete."""
    parts = text.split("/")
    if single and len(parts) != 1:
        return False
    return "\\" not in text and all(p not in ("", ".", "..") for p in parts)


@dataclass(frozen=True)
class Progress:
    """What a partial artifact's last durable checkpoint holds (see ArtifactWriter.checkpoint)."""

    step: int
    facts: dict
    extra: dict
    arrays: tuple[str, ...]           # arrays snapshotted at this step (load_checkpoint returns them)
    frames_written: dict[str, int]    # arrays written in place: time steps durably written


def check_json(where: Path, what: str, value: object) -> None:
    """Attrs must be plain JSON (no NaN/inf, no numpy scalars) so keys and attrs stay canonical."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ArtifactError(where, f"{what} is not plain JSON ({e}); convert numpy scalars with "
                            ".item() and use finite numbers", "fix the stage that writes it (a bug)",
                            "bad_write") from e
