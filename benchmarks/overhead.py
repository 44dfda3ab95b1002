"""Time each stage of the tiny job spends outside model compute: process start, imports, input
checks, artifact reads and writes. One fresh render in a temporary folder; prints a row per stage.

    python benchmarks/overhead.py [--repeats 3]

overhead = stage wall time (measured by the parent, from spawn to exit) - model compute, where
model compute = the stage's run() time less the artifact I/O inside it (both reported by the
stage over its progress descriptor). Medians over --repeats fresh renders (the machine is noisy).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def one_render() -> list[dict]:
    with tempfile.TemporaryDirectory() as d:
        job = yaml.safe_load((ROOT / "examples" / "tiny.yaml").read_text())
        job.update(output=f"{d}/out.mp4", work_dir=f"{d}/work", store=f"{d}/store")  # fresh: nothing reused
        (Path(d) / "job.yaml").write_text(yaml.safe_dump(job))
        subprocess.run([sys.executable, "-m", "ltx2.cli.main", "run", f"{d}/job.yaml"], check=True,
                       capture_output=True)
        return json.loads((Path(d) / "work" / "manifest.json").read_text())["stages"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from ltx2.models.tiny import ensure_tiny_model

    ensure_tiny_model()  # generation is a one-off, not per-stage overhead
    runs = [one_render() for _ in range(args.repeats)]
    print(f"tiny job (examples/tiny.yaml), medians of {args.repeats} fresh renders, seconds")
    print(f"{'stage':<12} {'wall':>6} {'compute':>8} {'art. I/O':>8} {'start+imports':>13} {'overhead':>9}")
    total_over = []
    for i, first in enumerate(runs[0]):
        rows = [r[i] for r in runs]
        wall = statistics.median(r["wall_s"] for r in rows)
        io = statistics.median(r["io_s"] for r in rows)
        compute = statistics.median(r["run_s"] - r["io_s"] for r in rows)
        over = statistics.median(r["wall_s"] - (r["run_s"] - r["io_s"]) for r in rows)
        start = statistics.median(r["wall_s"] - r["run_s"] for r in rows)
        total_over.append(over)
        print(f"{first['name']:<12} {wall:6.2f} {compute:8.2f} {io:8.3f} {start:13.2f} {over:9.2f}")
    print(f"worst per-stage overhead {max(total_over):.2f} s (aim: under 1 s per stage)")


if __name__ == "__main__":
    main()
