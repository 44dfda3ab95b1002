"""The `ltx2` typer app: one sub-command per module in this folder."""

from __future__ import annotations

import typer

from ltx2.cli.parity import parity
from ltx2.cli.stage import stage

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="LTX-2 audio+video diffusion in MLX, run as memory-bounded stage processes.")
app.command("parity")(parity)
app.command("stage")(stage)


@app.callback()
def _root() -> None:
    """LTX-2 in MLX."""


if __name__ == "__main__":
    app()
