"""Peak memory and time of Gemma-3-12B at its REAL widths: resident (float32, bf16, q8, q4) and streamed.

The public gemma-3-12b-it text config (hidden 3840, 16 query / 8 key-value heads of 256, MLP 15360,
vocabulary 262208, sliding window 1024, 48 layers) with only a few of its 48 layers (default 2) plus
the full embedding table, random bf16 weights written to a real single-file safetensors (the original
``language_model.model.*`` key names, config in the metadata), read by the same loaders the
text-encode stage uses. The embedding table (2 GB in bf16) is never held: its rows for the prompt's
tokens are read from the file. Each mode runs in its own subprocess (OpenBLAS preloaded); its peak RSS
is the child's ru_maxrss from os.wait4.

Prompt: 1024 tokens (LTX-2 pads every prompt to 1024), 2 prompts at once (the guided pipelines encode
the prompt and the negative prompt together). LTX-2 keeps every layer's hidden state (49 x 1024 x
3840 floats per prompt), so unlike the transformer, activations grow with the layer count.

The 48-layer figures are EXTRAPOLATED, and printed as such: weights scale with the layer count
(resident) or not (streamed); the kept hidden states grow by 2 x 1024 x 3840 x 4 bytes per layer;
time is 48 x the measured per-layer time (+ the measured per-layer read when streaming).

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0 python benchmarks/gemma_memory.py
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
TOKENS = 1024


def config(layers: int) -> dict:
    from ltx2.models.full_size import GEMMA_TEXT, gemma_config

    cfg = gemma_config()
    cfg["text_config"] = {**GEMMA_TEXT, "num_hidden_layers": layers}
    return cfg


def make_file(path: Path, layers: int) -> None:
    from ltx2.models.text import gemma
    from ltx2.models.layouts import shapes

    cfg = config(layers)
    layout = shapes(gemma.to_checkpoint(gemma.GemmaEncoder(gemma.GemmaConfig.from_config(cfg))))  # lazy
    t0 = time.time()
    size = write_random_bf16(path, layout, {"gemma_config": json.dumps(cfg)})
    print(f"wrote {path} ({size / GiB:.2f} GiB, {layers} layers + the embedding, random bf16) in "
          f"{time.time() - t0:.0f} s", flush=True)


def child(args) -> None:
    import mlx.core as mx
    import numpy as np
    import psutil

    from ltx2.models.text.streaming import load_gemma_mode
    from ltx2.models.weights.modes import WeightsMode
    from ltx2.stages.memory import gemma_held

    precision, _, kind = args.child.partition(":")
    mode = WeightsMode(precision, kind == "streamed")
    t0 = time.perf_counter()
    g = load_gemma_mode(args.file, mode)
    load_s = time.perf_counter() - t0
    rss_loaded = psutil.Process().memory_info().rss
    rng = np.random.default_rng(0)
    ids = mx.array(rng.integers(0, g.config.vocab_size, (args.batch, TOKENS)))
    mask = np.ones((args.batch, TOKENS), np.int32)
    mask[1:, : TOKENS // 2] = 0  # the second prompt left-padded, as a short negative prompt would be
    t0 = time.perf_counter()
    states = g(ids, mx.array(mask))
    mx.eval(states)
    forward_s = time.perf_counter() - t0
    held = gemma_held(Path(args.file), mode)
    out = {"mode": args.child, "layers": g.config.num_hidden_layers, "batch": args.batch, "tokens": TOKENS,
           "hidden": g.config.hidden_size, "load_s": load_s, "forward_s": forward_s, "rss_after_load": rss_loaded,
           "weights_held": held.total(mode.streaming), "resident_bytes": held.resident,
           "block_bytes": held.blocks[0], "block_stored": held.block_stored, "mlx_peak": mx.get_peak_memory(),
           "checksum": float(states[-1].abs().mean())}
    if mode.streaming:
        out["stream_load_s"] = g.stats.load_s
    emit(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=2, help="decoder layers in the benchmark file (real: 48)")
    ap.add_argument("--work", default="/tmp/ltx2_bench_gemma")
    ap.add_argument("--modes", default="float32,bfloat16,q8,q4,bfloat16:streamed,bfloat16:streamed-cold")
    ap.add_argument("--batch", type=int, default=2, help="prompts encoded at once (guided pipelines: 2)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--file", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"gemma3-12b-{args.layers}layers-random-bf16.safetensors"
    if not path.exists():
        make_file(path, args.layers)
    results = []
    for m in (m for m in args.modes.split(",") if m):
        cold = m.endswith("-cold")
        spec = m.replace("-cold", "")
        spec = spec if ":" in spec else spec + ":resident"
        if cold:
            evict(path)
        r = run_child(__file__, ["--child", spec, "--file", str(path), "--batch", str(args.batch)])
        r["cold"] = cold
        results.append(r)
        print(f"{m:24s} peak RSS {gb(r['peak_rss'])} GiB, forward {r['forward_s']:.1f} s, load {r['load_s']:.1f} s"
              + (f", streamed reads {r['stream_load_s']:.1f} s" if "stream_load_s" in r else ""), flush=True)
    rows = []
    for r in results:
        n, streamed = r["layers"], "streamed" in r["mode"]
        compute = (r["forward_s"] - r.get("stream_load_s", 0.0)) / n
        read = r.get("stream_load_s", 0.0) / n
        weights_48 = r["resident_bytes"] + (r["block_bytes"] if streamed else REAL_LAYERS * r["block_bytes"])
        states_48 = (REAL_LAYERS - n) * r["batch"] * r["tokens"] * r["hidden"] * 4
        peak_48 = r["peak_rss"] - r["weights_held"] + weights_48 + states_48
        label = r["mode"].replace(":resident", "") + (" (cold)" if r.get("cold") else "")
        rows.append([label, str(n), gb(r["block_bytes"]), gb(r["weights_held"]), gb(r["peak_rss"]),
                     f"{compute:.1f}", f"{read:.2f}" if streamed else "-", gb(weights_48), gb(peak_48),
                     f"{REAL_LAYERS * (compute + read):.0f}"])
    print(f"(wait4 reports max(child peak, parent peak at spawn); the parent's peak was "
          f"{gb(max(r['parent_peak_rss'] for r in results))} GiB, a child's figure equal to it would be the parent's, not the child's)")
    print()
    print(f"MEASURED ({results[0]['layers']} layers, {results[0]['batch']} prompts x {TOKENS} tokens) and "
          "EXTRAPOLATED to 48 layers (weights x layers when resident; + the hidden states of the other layers). "
          "GiB = 2^30 bytes.")
    print(table(rows, ["mode", "n", "layer GiB", "weights GiB", "peak RSS GiB", "s/layer", "read s/layer",
                       "48: weights", "48: peak (extrap.)", "48: s/pass (extrap.)"]))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
