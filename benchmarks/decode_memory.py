"""Peak memory and time of a video decode with LTX-2's real decoder widths: untiled and tiled.

The decoder is built from the real LTX-2 (19B) VAE config (conv_in 128 -> 1024, four res_x stacks
of 5 blocks at 1024 / 512 / 256 / 128 channels, three residual depth-to-space upsamplers,
timestep conditioning; 553 M parameters, 2.2 GB in float32) with random weights, and decodes a
random latent of the shape 768x512x121 gives (128 x 16 x 16 x 24) by default. Each mode runs in
its own subprocess so each peak is its own: the child's ru_maxrss from os.wait4.

Full run (hours on a CPU with MLX's stock Linux BLAS; minutes on Apple silicon):
    python benchmarks/decode_memory.py
Quick check at a reduced size:
    python benchmarks/decode_memory.py --latent 3,4,6 --base-channels 32 --budget-gb 0.75
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

RES = ["res_x", {"num_layers": 5, "inject_noise": False}]
UP = ["compress_all", {"residual": True, "multiplier": 2}]
# The "vae" decoder section of the LTX-2 (19B) checkpoint config.
REAL_DECODER = {"dims": 3, "latent_channels": 128, "out_channels": 3, "patch_size": 4, "norm_layer": "pixel_norm",
                "causal_decoder": False, "timestep_conditioning": True, "decoder_base_channels": 128,
                "decoder_blocks": [RES, UP, RES, UP, RES, UP, RES]}


def vae_config(args) -> dict:
    res = ["res_x", {"num_layers": args.layers, "inject_noise": False}]
    return dict(REAL_DECODER, decoder_base_channels=args.base_channels,
                timestep_conditioning=not args.no_timestep_conditioning,
                decoder_blocks=[res, UP, res, UP, res, UP, res])


def child(args) -> None:
    import mlx.core as mx
    from mlx.utils import tree_flatten

    from ltx2.models.video_vae import (KeyNoise, SpatialTiling, TemporalTiling, TilingConfig, VideoDecoder,
                                       VideoVAEConfig, choose_tiling, plan_tiles, tiled_decode)

    if args.cache_limit_mb is not None:
        mx.set_cache_limit(args.cache_limit_mb << 20)
    cfg = VideoVAEConfig.from_config({"vae": vae_config(args)})
    mx.random.seed(args.seed)
    dec = VideoDecoder(cfg)  # MLX's default init: random weights of the real shapes
    mx.eval(dec.parameters())
    weight_bytes = sum(v.nbytes for _, v in tree_flatten(dec.parameters()))
    latent_fhw = tuple(int(v) for v in args.latent.split(","))
    latent = mx.random.normal((1, *latent_fhw, cfg.latent_channels), key=mx.random.key(args.seed))
    noise = KeyNoise(mx.random.key(args.seed + 1))
    mx.eval(latent)
    info = {"mode": args.child, "weight_bytes": weight_bytes, "video": cfg.video_shape(latent_fhw)}
    t0 = time.perf_counter()
    if args.child == "untiled":
        out = dec(latent, noise=noise)
        mx.eval(out)
        info["checksum"] = float(out.astype(mx.float32).sum())
        info["tiles"] = 1
    else:
        if args.tile_px or args.tile_frames:
            spatial = SpatialTiling(args.tile_px, args.tile_overlap_px) if args.tile_px else None
            temporal = TemporalTiling(args.tile_frames, args.tile_overlap_frames) if args.tile_frames else None
            tiling = TilingConfig(spatial, temporal)
            plan = plan_tiles(cfg, latent_fhw, tiling)
            info["estimated_bytes"] = None
        else:
            choice = choose_tiling(cfg, latent_fhw, int(args.budget_gb * 2**30), weight_bytes)
            tiling, plan = choice.tiling, choice.plan
            info["estimated_bytes"] = choice.estimated_bytes
        info["tiling"] = repr(tiling)
        info["tiles"] = len(plan)
        total, frames = 0.0, 0
        for first, chunk in tiled_decode(dec, latent, plan, noise=noise):
            assert first == frames, (first, frames)
            frames += chunk.shape[1]
            total += float(chunk.sum())  # stand-in for writing the frames out
            del chunk
        assert frames == info["video"][0], (frames, info["video"])
        info["checksum"] = total
    info["seconds"] = time.perf_counter() - t0
    info["mlx_peak_bytes"] = mx.get_peak_memory()
    print("RESULT " + json.dumps(info), flush=True)


def run_mode(mode: str, argv: list[str]) -> dict:
    proc = subprocess.Popen([sys.executable, __file__, *argv, "--child", mode], stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.stdout.close()
    if status != 0:
        raise SystemExit(f"{mode}: child failed with status {status}:\n{out}")
    result = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
    # ru_maxrss is in KiB on Linux, in bytes on macOS
    result["peak_rss_bytes"] = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latent", default="16,16,24", help="latent frames,height,width (default: 121 x 512 x 768 video)")
    ap.add_argument("--base-channels", type=int, default=128, help="decoder_base_channels (real: 128)")
    ap.add_argument("--layers", type=int, default=5, help="res blocks per stack (real: 5)")
    ap.add_argument("--no-timestep-conditioning", action="store_true")
    ap.add_argument("--modes", default="untiled,tiled")
    ap.add_argument("--budget-gb", type=float, default=4.0, help="memory budget the tile plan must fit (GiB)")
    ap.add_argument("--tile-px", type=int, default=0, help="force a spatial tile size instead of planning one")
    ap.add_argument("--tile-overlap-px", type=int, default=64)
    ap.add_argument("--tile-frames", type=int, default=0, help="force a temporal tile size instead of planning one")
    ap.add_argument("--tile-overlap-frames", type=int, default=24)
    ap.add_argument("--cache-limit-mb", type=int, default=None, help="mx.set_cache_limit in the child (default: MLX's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)

    argv = sys.argv[1:]
    modes = [m for m in args.modes.split(",") if m]
    import psutil

    from ltx2.models.video_vae import VideoVAEConfig, estimate_decode_bytes

    cfg = VideoVAEConfig.from_config({"vae": vae_config(args)})
    latent_fhw = tuple(int(v) for v in args.latent.split(","))
    f, h, w = cfg.video_shape(latent_fhw)
    print(f"decoder widths {cfg.decoder_width} -> {cfg.decoder_stages()[-1][3]}, {args.layers} res blocks per stack, "
          f"timestep conditioning {cfg.timestep_conditioning}; latent {latent_fhw} -> video {f} x {h} x {w}")
    rows = []
    for mode in modes:
        if mode == "untiled":
            need = estimate_decode_bytes(cfg, latent_fhw) + 2 * 3 * f * h * w * 4
            avail = psutil.virtual_memory().available
            if need > 0.8 * avail:
                print(f"untiled: skipped, needs ~{need / 2**30:.1f} GiB of activations, "
                      f"{avail / 2**30:.1f} GiB available")
                continue
        r = run_mode(mode, argv)
        rows.append(r)
        est = r.get("estimated_bytes")
        print(f"{mode:8s} peak RSS {r['peak_rss_bytes'] / 2**30:6.2f} GiB  "
              f"(MLX peak {r['mlx_peak_bytes'] / 2**30:.2f} GiB, weights {r['weight_bytes'] / 2**30:.2f} GiB"
              + (f", plan estimate {est / 2**30:.2f} GiB" if est else "")
              + f")  {r['seconds']:8.1f} s  tiles {r['tiles']}" + (f"  {r['tiling']}" if "tiling" in r else ""),
              flush=True)
    if len(rows) == 2:
        a, b = rows
        print(f"checksums: {a['mode']} {a['checksum']:.6g}, {b['mode']} {b['checksum']:.6g} (tiles differ at seams "
              "and draw their own noise: close, not equal)")


if __name__ == "__main__":
    main()
