"""Peak memory and time of the LTX-2 (or LTX-2.3) transformer at its REAL widths: resident (float32, bf16, q8, q4)
and streamed.

``--version 2.3`` builds the LTX-2.3 22B transformer instead (models/full_size.py: the same widths with gated
attention, 9-row cross-attention AdaLN and prompt AdaLN; its text contexts arrive at the stream widths, 4096 / 2048,
the caption projection having moved to the text side).

The real LTX-2 19B transformer config (4096-wide video stream, 32 x 128 heads, FF 16384; 2048-wide
audio stream, 32 x 64 heads, FF 8192; 3840-wide text context of 1024 tokens) with only a few of its 48
blocks (default 2; everything outside the blocks at full size), random bf16 weights written to a real
safetensors file in the official layout, so the loaders and the streaming read it exactly as they read
the official checkpoint. Each mode runs in its own subprocess (OpenBLAS preloaded, as stage processes
do) and its peak RSS is that child's ru_maxrss from os.wait4.

Token counts of a 768x512x121 two-stage render (24 fps): 121 frames -> 16 latent frames; stage 1 at
384x256 -> 8 x 12 latent -> 16 x 8 x 12 = 1536 video tokens; stage 2 at 768x512 -> 16 x 16 x 24 = 6144;
audio: 121 / 24 s x 25 latents/s = 126 audio tokens. Stage 1 of the guided pipelines stacks its 4
passes (cond, uncond, STG, isolated) in one batch, so it holds ~4x one pass's activations; this
benchmark runs ONE pass per forward (batch 1) and says so.

The 48-block figures are EXTRAPOLATED, and printed as such: weights scale with the block count
(resident) or not at all (streamed: one block at a time); activations do not depend on the block
count; time per forward is 48 x the measured per-block time (+ 48 x the measured per-block read for
streaming).

``--compute bfloat16`` (or float16) runs every mode with that activation precision (the stages' ``compute``): the
weights held at that width too (models/precision.py), the latents and contexts entering float32 as the sampler
gives them. On this CPU MLX's bf16 matmul runs at ~2 GFLOP/s against OpenBLAS's ~50 in float32: one stage-1 block
takes minutes; the memory figures are what this is for.

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0 python benchmarks/transformer_memory.py
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _memory_common import GiB, emit, evict, gb, run_child, table, write_random_bf16  # noqa: E402

REAL_LAYERS = 48
STAGES = {"stage1": ((16, 8, 12), 126), "stage2": ((16, 16, 24), 126)}
CONTEXT_TOKENS = 1024


METADATA_VERSION = {"2.0": "2.0", "2.3": "2.3.0"}


def config(blocks: int, version: str = "2.0") -> dict:
    from ltx2.models.full_size import TRANSFORMER, TRANSFORMER_LTX23

    return {"transformer": {**(TRANSFORMER_LTX23 if version == "2.3" else TRANSFORMER), "num_layers": blocks}}


def make_file(path: Path, blocks: int, version: str = "2.0") -> None:
    from ltx2.models.layouts import shapes
    from ltx2.models.transformer import LTX2Transformer, TransformerConfig
    from ltx2.models.transformer.loader import to_checkpoint

    cfg = config(blocks, version)
    layout = shapes(to_checkpoint(LTX2Transformer(TransformerConfig.from_config(cfg))))  # lazy: nothing evaluated
    t0 = time.time()
    size = write_random_bf16(path, layout, {"config": json.dumps(cfg), "model_version": METADATA_VERSION[version]})
    print(f"wrote {path} ({size / GiB:.2f} GiB, {blocks} blocks, random bf16) in {time.time() - t0:.0f} s", flush=True)


# ------------------------------------------------------------------------------------------------ child
def child(args) -> None:
    import mlx.core as mx
    import numpy as np
    import psutil

    from ltx2.models.precision import compute_dtype
    from ltx2.models.transformer import ModalityInput
    from ltx2.models.transformer.streaming import load_transformer_mode
    from ltx2.spec.precision import compute_itemsize
    from ltx2.models.weights.modes import WeightsMode
    from ltx2.stages.memory import transformer_held
    from ltx2.stages.sampling import audio_positions, video_positions

    precision, _, kind = args.child.partition(":")
    mode = WeightsMode(precision, kind == "streamed")
    (f, h, w), a_tokens = STAGES[args.stage]
    b = args.batch
    t0 = time.perf_counter()
    model = load_transformer_mode(args.file, mode, dtype=compute_dtype(args.compute))
    load_s = time.perf_counter() - t0
    rss_loaded = psutil.Process().memory_info().rss
    c = model.config
    # LTX-2: text features (caption_channels) projected inside; LTX-2.3: contexts already at each stream's width
    v_ctx, a_ctx = ((c.caption_channels, c.caption_channels) if c.caption_projection else
                    (c.cross_attention_dim, c.audio_cross_attention_dim))
    key = mx.random.key(1)
    ks = mx.random.split(key, 4)
    video = ModalityInput(latent=mx.random.normal((b, f * h * w, c.in_channels), key=ks[0]), sigma=mx.array(0.7),
                          timesteps=mx.full((b, f * h * w), 0.7), positions=None,
                          context=mx.random.normal((b, CONTEXT_TOKENS, v_ctx), key=ks[1]) * 0.1)
    audio = ModalityInput(latent=mx.random.normal((b, a_tokens, c.audio_in_channels), key=ks[2]), sigma=mx.array(0.7),
                          timesteps=mx.full((b, a_tokens), 0.7), positions=None,
                          context=mx.random.normal((b, CONTEXT_TOKENS, a_ctx), key=ks[3]) * 0.1)
    tables = model.positional_tables(np.asarray(video_positions(f, h, w, 24.0, batch=b)),
                                     np.asarray(audio_positions(a_tokens, batch=b)))
    mx.eval(video.latent, video.context, audio.latent, audio.context)
    t0 = time.perf_counter()
    v, a = model(video, audio, None, tables)
    mx.eval(v, a)
    forward_s = time.perf_counter() - t0
    held = transformer_held(Path(args.file), mode, compute_itemsize(args.compute))
    out = {"mode": args.child, "compute": args.compute, "version": "2.3" if c.cross_attention_adaln else "2.0",
           "stage": args.stage, "blocks": c.num_layers, "batch": b, "video_tokens": f * h * w,
           "audio_tokens": a_tokens, "load_s": load_s, "forward_s": forward_s, "rss_after_load": rss_loaded,
           "weights_held": held.total(mode.streaming), "resident_bytes": held.resident,
           "block_bytes": held.blocks[0], "block_stored": held.block_stored, "block_float32": held.block_float32,
           "mlx_peak": mx.get_peak_memory(), "checksum": float(v.astype(mx.float32).abs().mean())}
    if mode.streaming:
        out["stream_load_s"] = model.stats.load_s
    emit(out)


# ------------------------------------------------------------------------------------------------ parent
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--blocks", type=int, default=2, help="transformer blocks in the benchmark file (real: 48)")
    ap.add_argument("--work", default="/tmp/ltx2_bench_transformer", help="folder for the weight file")
    ap.add_argument("--stage1-modes",
                    default="float32,bfloat16,q8,q4,float32:streamed,bfloat16:streamed,bfloat16:streamed-cold")
    ap.add_argument("--stage2-modes", default="float32:streamed,bfloat16:streamed",
                    help="modes at the stage-2 token count (each block costs ~4x stage 1's time)")
    ap.add_argument("--stage2-blocks", type=int, default=1, help="blocks for the stage-2 runs (a second, smaller file)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--version", choices=("2.0", "2.3"), default="2.0", help="LTX-2 (19B) or LTX-2.3 (22B) widths")
    ap.add_argument("--compute", choices=("float32", "bfloat16", "float16"), default="float32",
                    help="activation precision of every run (the stages' compute parameter)")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--file", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--stage", default="stage1", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    runs: list[tuple[str, str, int]] = [("stage1", m, args.blocks) for m in args.stage1_modes.split(",") if m]
    runs += [("stage2", m, args.stage2_blocks) for m in args.stage2_modes.split(",") if m]
    files = {}
    for n in sorted({r[2] for r in runs}):
        tag = "" if args.version == "2.0" else f"-{args.version}"
        files[n] = work / f"ltx2{tag}-{n}blocks-random-bf16.safetensors"
        if not files[n].exists():
            make_file(files[n], n, args.version)
    results = []
    for stage, m, n in runs:
        cold = m.endswith("-cold")
        spec = m.replace("-cold", "")
        spec = spec if ":" in spec else spec + ":resident"
        if cold:
            evict(files[n])
        r = run_child(__file__, ["--child", spec, "--file", str(files[n]), "--stage", stage, "--batch", str(args.batch),
                                 "--compute", args.compute])
        r["cold"] = cold
        results.append(r)
        print(f"{stage} {m:24s} peak RSS {gb(r['peak_rss'])} GiB, forward {r['forward_s']:.1f} s, load "
              f"{r['load_s']:.1f} s" + (f", streamed reads {r['stream_load_s']:.1f} s" if "stream_load_s" in r else ""),
              flush=True)
    report(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


def report(results: list[dict]) -> None:
    rows, extra = [], []
    for r in results:
        n = r["blocks"]
        streamed = "streamed" in r["mode"]
        compute_block = (r["forward_s"] - r.get("stream_load_s", 0.0)) / n
        load_block = r.get("stream_load_s", 0.0) / n
        weights_48 = r["resident_bytes"] + (r["block_bytes"] if streamed else REAL_LAYERS * r["block_bytes"])
        peak_48 = r["peak_rss"] - r["weights_held"] + weights_48
        acts = r["peak_rss"] - r["weights_held"]
        label = r["mode"].replace(":resident", "") + (" (cold)" if r.get("cold") else "") + \
            (f" [{r['compute']}]" if r.get("compute", "float32") != "float32" else "")
        rows.append([r["stage"], label, f"{r['batch']} x {r['video_tokens']}+{r['audio_tokens']}", str(n), gb(r["block_bytes"]),
                     gb(r["weights_held"]), gb(r["peak_rss"]), gb(acts), f"{compute_block:.1f}",
                     f"{load_block:.2f}" if streamed else "-", gb(weights_48), gb(peak_48),
                     f"{REAL_LAYERS * (compute_block + load_block):.0f}"])
    print(f"(wait4 reports max(child peak, parent peak at spawn); the parent's peak was "
          f"{gb(max(r['parent_peak_rss'] for r in results))} GiB, a child's figure equal to it would be the parent's, not the child's)")
    print()
    print("MEASURED (n blocks) and EXTRAPOLATED to 48 blocks (weights scale with blocks when resident; activations "
          "and the per-block times do not). GiB = 2^30 bytes.")
    print(table(rows, ["stage", "mode", "batch x tokens v+a", "n", "block GiB", "weights GiB", "peak RSS GiB",
                       "peak-weights", "s/block", "read s/block", "48: weights", "48: peak (extrap.)",
                       "48: s/pass (extrap.)"]))


if __name__ == "__main__":
    main()
