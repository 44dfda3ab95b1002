"""Every stage of the two-stage pipeline at 768x512x121 with audio: the planner's choice and estimated peak for
a 16 GB machine, and the measured peak of the stages that run here in reasonable time.

Estimates: `ltx2 plan`'s memory planner (orchestrator/planner.py) on FULL-SIZE files whose headers are
synthesised (models/full_size.py: the LTX-2 19B checkpoint, the x2 spatial upsampler, the distilled
LoRA 384 and the Gemma-3-12B folder, real keys and shapes, sparse bodies), for the budgets given
(default 16 GB: the whole machine, and 12 GB: the goal, a 16 GB Mac less the OS) and each compute precision
given (the job's ``compute``: float32 activations, and bfloat16, what ``auto`` picks on a GPU).

Measured: the real stage processes (`ltx2 stage ...`, started by the orchestrator's runner, peak RSS
from os.wait4) on those same full-size files (their sparse bodies read as zeros: the memory and the
arithmetic are real, the numbers are not) for the stages that finish in minutes on a 2-core CPU:
upscale and vocode. text-encode, denoise and refine are measured at the real widths by
benchmarks/gemma_memory.py and benchmarks/transformer_memory.py (a few blocks, extrapolated); give
their --json outputs to show those figures here. decode is measured by benchmarks/decode_memory.py
(hours at the real widths on this CPU): not run here.

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0 python benchmarks/pipeline_memory.py \
        --transformer-json /tmp/ltx2_bench_transformer/results.json,/tmp/ltx2_bench_transformer/results_guided.json \
        --gemma-json /tmp/ltx2_bench_gemma/results.json
    (results_guided.json: transformer_memory.py --stage1-modes bfloat16:streamed --stage2-modes "" --batch 4)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _memory_common import GiB, gb, table  # noqa: E402

GOAL = 12 * GiB


def job_file(folder: Path, files: dict[str, Path], budget: str, compute: str = "float32") -> Path:
    import yaml

    job = {"pipeline": "two-stage", "prompt": "a red fox trots through fresh snow at dawn", "width": 768,
           "height": 512, "frames": 121, "fps": 24, "model": {k: str(v) for k, v in files.items()},
           "memory_budget": budget, "work_dir": str(folder / "work"), "output": str(folder / "out.mp4"),
           "compute": compute}
    path = folder / f"job-{budget}-{compute}.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def planned(folder: Path, files: dict[str, Path], budget: str, compute: str = "float32"):
    from ltx2.orchestrator.job import load_job, parse_memory_size
    from ltx2.orchestrator.planner import plan_job

    job = load_job(job_file(folder, files, budget, compute))
    return job, plan_job(job, parse_memory_size(budget))


def fake_latents(path: Path, video_shape: tuple, audio_shape: tuple, width: int, height: int) -> None:
    """A latents artifact of the real shape (random values), as denoise would write it."""
    import mlx.core as mx

    from ltx2.artifacts_schema import ArtifactWriter, Producer

    w = ArtifactWriter(path, "latents", producer=Producer("benchmark", "1"), cache_key="benchmark",
                       params={"seed": 0})
    w.write_array("video", mx.random.normal(video_shape, key=mx.random.key(0)))
    w.write_array("audio", mx.random.normal(audio_shape, key=mx.random.key(1)))
    w.finalize(facts={"frame_count": 121, "height": height, "width": width, "fps": 24.0, "sigma": 0.0, "step": 1,
                      "total_steps": 1})


def measure_stage(name: str, inputs: list[Path], out: Path, weights: dict[str, Path], budget: int) -> dict:
    from ltx2.orchestrator.runner import run_stage

    args = ["--out", str(out), "--budget", str(budget)]
    for p in inputs:
        args += ["--in", str(p)]
    for role, p in weights.items():
        args += ["--weights", f"{role}={p}"]
    t0 = time.time()
    run = run_stage(name, args, out.with_suffix(".log"), budget_bytes=budget)
    if not run.ok:
        raise SystemExit(f"{name} failed: {run.message} (log {out.with_suffix('.log')})")
    plan = next(e for e in run.events if e.get("event") == "plan")
    est = plan["weights_bytes"] + plan["activations_bytes"] + plan["baseline_bytes"]
    return {"peak_rss": run.peak_rss, "estimate": est, "wall_s": time.time() - t0}


def _label(mode: str) -> str:
    """A benchmark mode ("q4:resident", "bfloat16:streamed") as the planner labels it ("q4 g64", "bfloat16, streamed")."""
    from ltx2.models.weights.modes import WeightsMode

    precision, _, kind = mode.partition(":")
    return WeightsMode(precision, kind == "streamed").label


def extrapolated(transformer: list[dict] | None, gemma: list[dict] | None) -> dict[tuple[str, str], float]:
    """(stage, mode label) -> peak RSS extrapolated to 48 blocks / layers from the width benchmarks."""
    out: dict[tuple[str, str], float] = {}
    # batch-1 runs first: a guided stage-1 run with the 4 passes stacked (batch 4, what a streamed denoise
    # does) then replaces the one-pass figure of its mode
    for r in sorted(transformer or [], key=lambda r: r.get("batch", 1)):
        streamed = "streamed" in r["mode"]
        if r["stage"] == "stage1" and r.get("batch", 1) > 1 and not streamed:
            continue
        weights_48 = r["resident_bytes"] + (r["block_bytes"] if streamed else 48 * r["block_bytes"])
        peak = r["peak_rss"] - r["weights_held"] + weights_48
        if r.get("cold"):
            continue
        mode = _label(r["mode"])
        for stage in (("denoise",) if r["stage"] == "stage1" else ("refine",)):
            out[(stage, mode)] = peak
    for r in gemma or []:
        if r.get("cold"):
            continue
        streamed = "streamed" in r["mode"]
        weights_48 = r["resident_bytes"] + (r["block_bytes"] if streamed else 48 * r["block_bytes"])
        states = (48 - r["layers"]) * r["batch"] * r["tokens"] * r["hidden"] * 4
        mode = _label(r["mode"])
        out[("text-encode", mode)] = r["peak_rss"] - r["weights_held"] + weights_48 + states
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/ltx2_bench_pipeline")
    ap.add_argument("--budgets", default="16GB,12GB")
    ap.add_argument("--compute", default="float32,bfloat16", help="the job's compute precisions to plan with")
    ap.add_argument("--measure", default="upscale,vocode", help="stages to run here on the full-size files")
    ap.add_argument("--transformer-json", default=None, help="comma list of transformer_memory.py --json outputs")
    ap.add_argument("--gemma-json", default=None)
    args = ap.parse_args()

    from ltx2.models.full_size import write_full_size_model
    from ltx2.orchestrator.cache_keys import plan_keys  # noqa: F401  (imports the orchestrator once)

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    files = write_full_size_model(work / "weights")
    print(f"header-only full-size files in {work / 'weights'} (sparse: "
          f"{sum(p.stat().st_blocks for p in (work / 'weights').rglob('*') if p.is_file()) * 512 / 2**20:.1f} MB on "
          f"disk for {sum(p.stat().st_size for p in (work / 'weights').rglob('*') if p.is_file()) / GiB:.1f} GiB)")
    tj = [r for f in (args.transformer_json or "").split(",") if f for r in json.loads(Path(f).read_text())]
    gj = json.loads(Path(args.gemma_json).read_text()) if args.gemma_json else None
    extra = extrapolated(tj, gj)

    saved = work / "measured.json"  # stage runs of an earlier invocation (--measure "" reuses them)
    measured: dict[str, dict] = json.loads(saved.read_text()) if saved.exists() and not args.measure else {}
    budget16 = 16 * GiB
    if "upscale" in args.measure or "vocode" in args.measure:
        stage1 = work / "stage1.zarr"
        if not stage1.exists():
            fake_latents(stage1, (1, 128, 16, 8, 12), (1, 8, 126, 16), 384, 256)
        if "upscale" in args.measure:
            out = work / "upscaled.zarr"
            import shutil

            shutil.rmtree(out, ignore_errors=True)
            measured["upscale"] = measure_stage("upscale", [stage1], out, {"spatial_upsampler": files["spatial_upsampler"],
                                                                           "checkpoint": files["checkpoint"]}, budget16)
            print(f"measured upscale: peak {gb(measured['upscale']['peak_rss'])} GiB in "
                  f"{measured['upscale']['wall_s']:.0f} s", flush=True)
        if "vocode" in args.measure:
            latents = work / "latents.zarr"
            if not latents.exists():
                fake_latents(latents, (1, 128, 16, 16, 24), (1, 8, 126, 16), 768, 512)
            out = work / "audio.zarr"
            import shutil

            shutil.rmtree(out, ignore_errors=True)
            measured["vocode"] = measure_stage("vocode", [latents], out, {"checkpoint": files["checkpoint"]}, budget16)
            print(f"measured vocode: peak {gb(measured['vocode']['peak_rss'])} GiB in "
                  f"{measured['vocode']['wall_s']:.0f} s", flush=True)

    if args.measure:
        saved.write_text(json.dumps(measured))
    for budget, compute in [(b, c) for b in args.budgets.split(",") for c in args.compute.split(",")]:
        _, jp = planned(work, files, budget, compute)
        rows = []
        for name, p in jp.plans.items():
            if name == "export":
                continue
            e = p.estimate
            meas = ""
            if name in measured:
                meas = f"{gb(measured[name]['peak_rss'])} (stage run)"
            elif (name, p.label) in extra:
                meas = f"{gb(extra[(name, p.label)])} (extrap.)"
            stream = f"+{p.stream_s_per_step:.0f} s/step" if p.stream_s_per_step is not None else "-"
            rows.append([name, p.label, gb(e.weights_bytes), gb(e.activations_bytes), gb(e.total), meas,
                         "yes" if p.fits else f"NO (needs {gb(p.need)})", "yes" if e.total <= GOAL else "no", stream])
        print()
        print(f"768x512x121 two-stage with audio, budget {budget}, compute {compute} (GiB = 2^30 bytes): the planner's "
              "choice and estimate; measured peak (float32 runs) where run")
        print(table(rows, ["stage", "choice", "weights", "activations", "est. peak", "measured peak", "fits",
                           "< 12 GiB", "streaming"]))
    if extra:
        print()
        print("peak RSS extrapolated to the full model from the width benchmarks, per mode (GiB):")
        print(table([[s, m, gb(v), "yes" if v <= GOAL else "no"] for (s, m), v in sorted(extra.items())],
                    ["stage", "mode", "peak (extrap.)", "< 12 GiB"]))


if __name__ == "__main__":
    main()
