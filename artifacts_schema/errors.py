"""The one exception every artifact problem is reported with."""

from __future__ import annotations

from pathlib import Path

from ltx2.spec.errors import EXIT_BUG, BadInputError

# Why an artifact was refused; callers (the orchestrator, `ltx2 inspect`) branch on these.
REASONS = (
    "missing",         # no artifact at the path
    "partial",         # only an unfinished NAME.zarr.partial exists, or the path is one
    "not_artifact",    # not a Zarr v3 group written by ltx2
    "schema_version",  # written by a build with another schema version
    "wrong_kind",      # a different kind than the caller expects
    "invalid",         # a required array / attribute / fact is missing or malformed
    "hash_mismatch",   # stored bytes do not hash to the recorded sha256
    "locked",          # another run holds the artifact's lock
    "bad_write",       # a stage tried to write something its kind does not allow (a stage bug)
)


class ArtifactError(BadInputError):
    """An artifact is missing, unfinished, corrupt, of another kind or schema, or locked.

    The message names the artifact path, what is wrong, and how to fix it. Bad input (exit 2), except
    ``bad_write``: a stage writing what its kind does not allow is the stage's own bug (exit 1).
    """

    @property
    def exit_code(self) -> int:  # type: ignore[override]
        return EXIT_BUG if self.reason == "bad_write" else super().exit_code

    def __init__(self, path: str | Path, problem: str, fix: str, reason: str = "invalid"):
        if reason not in REASONS:
            raise ValueError(f"unknown ArtifactError reason {reason!r}")
        self.path = Path(path)
        self.problem = problem
        self.fix = fix
        self.reason = reason
        super().__init__(f"artifact {self.path}: {problem}. Fix: {fix}")


# Fixes shared by several messages, so they read the same everywhere.
FIX_RERUN = "re-run the stage that produces it"
FIX_DELETE = "delete it and run again"
