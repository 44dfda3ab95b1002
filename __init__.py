"""ltx2: LTX-2 audio+video diffusion in MLX, run as separate memory-bounded stage processes."""

__version__ = "0.1.0"
