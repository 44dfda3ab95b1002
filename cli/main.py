"""The `ltx2` typer app: one sub-command per module in this folder.

``app`` is built on first use, importing every sub-command's module; ``main()`` (`python -m ltx2.cli.main`)
sends `ltx2 stage ...` to cli/stage_entry.py instead, which imports only what one stage needs: a stage
process's start is paid once per stage of every render.
"""

from __future__ import annotations

import sys
from functools import cache

import typer


@cache
def _app() -> typer.Typer:
    # imported here, not at the top: `ltx2 stage` never needs the other sub-commands (process start)
    from ltx2.cli.convert import convert
    from ltx2.cli.gc import gc
    from ltx2.cli.inspect import inspect
    from ltx2.cli.parity import parity
    from ltx2.cli.plan import plan
    from ltx2.cli.run import run
    from ltx2.cli.stage import stage
    from ltx2.cli.weights import app as weights_app

    app = typer.Typer(add_completion=False, no_args_is_help=True,
                      help="LTX-2 audio+video diffusion in MLX, run as memory-bounded stage processes.")
    app.command("parity")(parity)
    app.command("stage", add_help_option=False)(stage)
    app.command("run")(run)
    app.command("plan")(plan)
    app.command("inspect")(inspect)
    app.add_typer(weights_app, name="weights")
    app.command("convert")(convert)
    app.command("gc")(gc)

    @app.callback()
    def _root() -> None:
        """LTX-2 in MLX."""

    return app


def __getattr__(name: str):
    if name == "app":  # `from ltx2.cli.main import app` (the console script, tests) builds it
        return _app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    """`ltx2 ARGS...`: `ltx2 stage` through its light entry, anything else through the whole app."""
    if sys.argv[1:2] == ["stage"]:
        from ltx2.cli.stage_entry import main as stage_main  # the light entry, not the whole app (process start)

        stage_main(sys.argv[2:])
    else:
        _app()()


if __name__ == "__main__":
    main()
