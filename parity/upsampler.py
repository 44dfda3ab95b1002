"""Parity of the latent upsampler (raw, and through the normalising wrapper) with the reference."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import numpy as np

from ltx2.models.upsampler import LatentStatistics, load_upsampler, upsample_latent

from . import NETWORK_TOL, ParityResult, compare, load_fixture


def check_upsampler(directory: Path, name: str) -> list[ParityResult]:
    z = load_fixture(directory, name)
    model = load_upsampler(Path(directory) / f"{name}.safetensors")
    lat = mx.array(z["in_latent"])  # (B, C, F, H, W), the reference layout
    raw = model(lat.transpose(0, 2, 3, 4, 1)).transpose(0, 4, 1, 2, 3)
    stats = LatentStatistics(mean=mx.array(z["vae_mean_of_means"]), std=mx.array(z["vae_std_of_means"]))
    full = upsample_latent(lat, model, stats)
    mx.eval(raw, full)
    return [compare(name, "out_latent_raw", np.array(raw), z["out_latent_raw"], NETWORK_TOL),
            compare(name, "out_upsample_video", np.array(full), z["out_upsample_video"], NETWORK_TOL)]
