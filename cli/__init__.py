"""The `ltx2` command line (typer)."""
