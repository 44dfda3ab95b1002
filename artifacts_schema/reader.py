"""Opening a finished artifact: validate it, then read arrays (or time slices of them) lazily.

Every byte a reader returns has been checked against the sha256 recorded for its chunk; a read
of a whole array is also checked against the whole-array sha256, and ``verify()`` checks all
arrays eagerly. A time slice reads only the chunks that cover it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import dtypes
from .errors import FIX_DELETE, FIX_RERUN, ArtifactError
from .files import is_partial_name, partial_path
from .hashing import ATTRS_HASH, attrs_sha256
from .kinds import KINDS, SCHEMA_NAME, SCHEMA_VERSION, KindSpec
from .records import ArrayRecord, Producer
from .store import open_array, read_group_attrs, read_time_range
from .validate import content_problems, unknown_kind

# Which stage writes each kind, for messages that tell the user what to re-run.
PRODUCED_BY = {"text": "text-encode", "conditioning": "encode", "latents": "denoise / upscale / refine",
               "frames": "decode", "audio": "vocode"}


@dataclass
class Artifact:
    """A validated, finished artifact. Build it with ``open_artifact``."""

    path: Path
    kind: str
    schema_version: int
    producer: Producer
    cache_key: str
    input_keys: dict[str, str]
    params: dict
    facts: dict
    arrays: dict[str, ArrayRecord]
    verified: set[str] = field(default_factory=set)   # arrays whose whole sha256 has been checked
    _zarrays: dict = field(default_factory=dict, repr=False)

    @property
    def spec(self) -> KindSpec:
        return KINDS[self.kind]

    def shape(self, name: str) -> tuple[int, ...]:
        return self._record(name).shape

    def logical_dtype(self, name: str) -> str:
        return self._record(name).logical_dtype

    def read(self, name: str, time: slice | tuple[int, int] | None = None):
        """The array (or time steps ``time`` of it along its time axis) as MLX, in its logical dtype."""
        rec = self._record(name)
        return dtypes.to_mlx(self._read_stored(rec, time), rec.logical_dtype)

    def read_numpy(self, name: str, time: slice | tuple[int, int] | None = None) -> np.ndarray:
        """Like read(), as numpy; bfloat16 comes back as float32 (exactly)."""
        rec = self._record(name)
        return dtypes.to_numpy(self._read_stored(rec, time), rec.logical_dtype)

    def verify(self) -> None:
        """Check every array against its recorded sha256 now (raises ArtifactError on a mismatch)."""
        for rec in self.arrays.values():
            self._read_stored(rec, None)

    # ---- internals ----------------------------------------------------------------------------
    def _record(self, name: str) -> ArrayRecord:
        if name not in self.arrays:
            raise ArtifactError(self.path, f"has no array '{name}' (it holds {', '.join(self.arrays)})",
                                f"ask for one of those; a {self.kind} artifact never holds '{name}'", "invalid")
        return self.arrays[name]

    def _read_stored(self, rec: ArrayRecord, time) -> np.ndarray:
        start, stop = self._time_range(rec, time)
        if rec.name not in self._zarrays:
            self._zarrays[rec.name] = open_array(self.path, rec)
        data = read_time_range(self.path, self._zarrays[rec.name], rec, start, stop)
        if (start, stop) == (0, rec.length):
            self.verified.add(rec.name)
        return data

    def _time_range(self, rec: ArrayRecord, time) -> tuple[int, int]:
        if time is None:
            return 0, rec.length
        if rec.time_axis is None:
            raise ArtifactError(self.path, f"array '{rec.name}' has no time axis to slice",
                                "read it whole (time=None)", "invalid")
        if isinstance(time, slice):
            if time.step not in (None, 1):
                raise ValueError(f"time slices must be contiguous, got step {time.step}")
            start, stop, _ = time.indices(rec.length)
        else:
            start, stop = (int(t) for t in time)
        if not 0 <= start <= stop <= rec.length:
            raise ValueError(f"time range {start}:{stop} is outside array '{rec.name}' "
                             f"({rec.length} steps along axis {rec.time_axis})")
        return start, stop


def check_attrs_hash(path: Path, attrs: dict, rerun: str) -> None:
    """Refuse attributes changed after the writer sealed them (a fact, a param, a key, an array record)."""
    recorded = attrs.get(ATTRS_HASH)
    fix = f"{FIX_DELETE} ({rerun})"
    if not isinstance(recorded, str):
        raise ArtifactError(path, f"has no {ATTRS_HASH} (the hash of its attributes; every finished artifact of "
                            f"schema {SCHEMA_VERSION} records one): the artifact is corrupt", fix, "hash_mismatch")
    got = attrs_sha256(attrs)
    if got != recorded:
        raise ArtifactError(path, f"its attributes (kind, producer, keys, params, facts, array records) hash to "
                            f"{got[:16]}..., but {ATTRS_HASH} records {recorded[:16]}...: they were changed after "
                            "it was written; the artifact is corrupt", fix, "hash_mismatch")


def open_artifact(path: str | Path, kind: str | None = None, *, verify: bool = False) -> Artifact:
    """Open and validate the finished artifact at ``path`` (expecting ``kind`` if given).

    Refuses (ArtifactError) a missing or partial artifact, another schema or schema version,
    another kind, missing arrays / attributes / facts, array records pointing outside the artifact,
    attributes that do not match their recorded ``attrs_sha256`` (always, on open: it is cheap), and
    (with verify=True, or on any read) stored bytes that do not match their recorded sha256.
    """
    path = Path(path)
    if kind is not None and kind not in KINDS:
        raise ValueError(unknown_kind(kind))
    rerun = f"{FIX_RERUN} ({PRODUCED_BY[kind]})" if kind else FIX_RERUN
    if is_partial_name(path):
        raise ArtifactError(path, "is a partial artifact (a stage was interrupted while writing it, or is "
                            "still writing it); a partial is never read", f"{rerun}; a resumable stage "
                            "continues from the partial", "partial")
    if not path.exists():
        if partial_path(path).exists():
            raise ArtifactError(path, f"is incomplete: only {partial_path(path).name} exists (the stage writing it "
                                "was interrupted, or is still running)", f"{rerun}; a resumable stage "
                                "continues from the partial", "partial")
        raise ArtifactError(path, "does not exist", rerun, "missing")
    attrs = read_group_attrs(path)

    def bad(problem: str, reason: str = "invalid", fix: str = f"{FIX_DELETE} ({rerun})") -> ArtifactError:
        return ArtifactError(path, problem, fix, reason)

    if attrs.get("schema") != SCHEMA_NAME:
        raise bad(f"is not an ltx2 artifact (group attribute schema={attrs.get('schema')!r}, "
                  f"expected {SCHEMA_NAME!r})", "not_artifact")
    version = attrs.get("schema_version")
    if version != SCHEMA_VERSION:
        raise bad(f"unknown schema version {version} (this build reads {SCHEMA_VERSION})", "schema_version",
                  f"{rerun} with this build (delete it first), or read it with the ltx2 version that wrote it")
    if attrs.get("complete") is not True:
        raise ArtifactError(path, "is not marked complete (a partial renamed by hand?)", f"{FIX_DELETE} "
                            f"({rerun})", "partial")
    found = attrs.get("kind")
    if found not in KINDS:
        raise bad(f"has {unknown_kind(found)}")
    if kind is not None and found != kind:
        raise ArtifactError(path, f"wrong kind: expected {kind}, found {found}",
                            f"pass a {kind} artifact (written by {PRODUCED_BY[kind]}), not the {found} "
                            f"artifact written by {PRODUCED_BY[found]}", "wrong_kind")
    wanted = {"producer": dict, "cache_key": str, "input_keys": dict, "params": dict, "facts": dict, "arrays": dict}
    for key, typ in wanted.items():
        if key not in attrs:
            raise bad(f"missing attribute '{key}'")
        if not isinstance(attrs[key], typ):
            raise bad(f"attribute '{key}' is a {type(attrs[key]).__name__}, expected {typ.__name__}")
    try:
        producer = Producer.from_json(attrs["producer"])
    except KeyError as e:
        raise bad(f"attribute 'producer' lacks {e}") from e
    records = {n: ArrayRecord.from_json(n, r, path) for n, r in attrs["arrays"].items()}
    problems = content_problems(KINDS[found], records, attrs["facts"])
    for rec in records.values():
        if not isinstance(rec.sha256, str):
            problems.append(f"no sha256 recorded for array '{rec.name}'")
    if problems:
        raise bad("; ".join(problems))
    check_attrs_hash(path, attrs, rerun)
    for rec in records.values():
        open_array(path, rec)  # exists and matches the recorded shape / dtype / chunking
    art = Artifact(path=path, kind=found, schema_version=version, producer=producer, cache_key=attrs["cache_key"],
                   input_keys=dict(attrs["input_keys"]), params=dict(attrs["params"]), facts=dict(attrs["facts"]),
                   arrays=records)
    if verify:
        art.verify()
    return art
