"""A stage process's entry: `python -m ltx2.cli.stage_entry NAME ARGS...` runs `ltx2 stage NAME ARGS...`.

`ltx2 run` starts every stage this way (orchestrator/runner.py), and `python -m ltx2.cli.main stage` comes
here too. Before anything heavy is imported (MLX, numpy, Zarr: most of a stage's start) it ties the process
to the run that started it (``die_with_parent``: a run killed while its stage starts up ends the stage too)
and, on Linux, restarts with the optimised BLAS preloaded if it is not yet (cheap this early). Then it
builds only the stage command, which imports the stage machinery and that one stage's module, not every
`ltx2` sub-command.
"""

from __future__ import annotations

import os
import sys

from ltx2.orchestrator.runner import stage_env
from ltx2.stages.contract import LIFELINE_FD_ENV, PARENT_PID_ENV, die_with_parent


def reexec_with_optimized_blas() -> None:
    """Restart this process, as it was started, with the optimised BLAS preloaded (Linux), as `ltx2 run`
    starts stages: a stage run by hand is then as fast as, and computes exactly what, the orchestrator's
    would. The restarted process keeps its tie to the run (its variables; the pipe's read end is
    inheritable and PR_SET_PDEATHSIG survives execve)."""
    env = stage_env()
    if env.get("LD_PRELOAD", "") != os.environ.get("LD_PRELOAD", ""):
        env.update({k: os.environ[k] for k in (PARENT_PID_ENV, LIFELINE_FD_ENV) if k in os.environ})
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def main(args: list[str] | None = None) -> None:
    """Run `ltx2 stage` with ``args`` (default: this process's arguments)."""
    die_with_parent()
    reexec_with_optimized_blas()
    # imported after the tie and the restart on purpose: these imports are most of the process's start
    import typer

    from ltx2.cli.stage import stage

    app = typer.Typer(add_completion=False)
    app.command("stage", add_help_option=False)(stage)
    app(args=sys.argv[1:] if args is None else args, prog_name="ltx2 stage")


if __name__ == "__main__":
    main()
