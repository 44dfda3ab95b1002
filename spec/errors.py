"""The exception taxonomy: every error this program raises on purpose is one of two kinds.

- :class:`BadInputError` - something the user gave is wrong (a job field, a file, an artifact, a
  refused model config, a CLI argument). Its message names what, the value and the fix. A stage
  process exits 2 on it; `ltx2 run` / `ltx2 plan` refuse before any stage runs.
- :class:`DoesNotFitError` - the work cannot fit its memory budget. Exit 75 (EX_TEMPFAIL): retry with
  a larger budget or smaller work.

Anything else that escapes is a bug (exit 1, with its traceback in the stage log). Module-specific
errors subclass one of these (they may also subclass ValueError / MemoryError where callers already
catch those).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_BUG = 1
EXIT_BAD_INPUT = 2
EXIT_DOES_NOT_FIT = 75  # EX_TEMPFAIL
EXIT_NO_SPACE = 74  # EX_IOERR: the disk filled up; free space, then the same command continues


class Ltx2Error(Exception):
    """Base of every error raised on purpose."""

    exit_code = EXIT_BUG


class BadInputError(Ltx2Error, ValueError):
    """Wrong input: the message names the field, file or artifact, the value and the fix."""

    exit_code = EXIT_BAD_INPUT


class DoesNotFitError(Ltx2Error):
    """The work needs more memory than its budget; the message says how much and what would help."""

    exit_code = EXIT_DOES_NOT_FIT
