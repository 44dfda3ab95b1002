"""The `ltx2` typer app: one sub-command per module in this folder."""

from __future__ import annotations

import typer

from ltx2.cli.parity import parity
from ltx2.cli.inspect import inspect
from ltx2.cli.convert import convert
from ltx2.cli.gc import gc
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


if __name__ == "__main__":
    app()
