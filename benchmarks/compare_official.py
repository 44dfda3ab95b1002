"""This port (MLX) against the official ltx-core 1.0.0 (PyTorch), side by side in one run, float32 on CPU, at the
REAL widths with random weights.

Components (sizes of a 768x512x121 two-stage render, 24 fps):
  block_s1       one audio-video transformer block, stage-1 tokens: video 16 x 8 x 12 = 1536, audio 126, text 1024
  block_s2       the same block at stage-2 tokens: video 16 x 16 x 24 = 6144, audio 126, text 1024
  vae_decoder    the video VAE decoder (LTX-2 19B widths, timestep conditioning) on 9 frames at 512x768:
                 latent 2 x 16 x 24, untiled (one official tile is 512 px / 64 frames, so this is one tile)
  upsampler      the spatial x2 latent upsampler (1024 wide, 4 + 4 res blocks) on the stage-1 latent 16 x 8 x 12
  audio_decoder  the audio VAE decoder on the render's 126 latent frames (~5 s, 501 mel frames)
  vocoder        the LTX-2 HiFi-GAN vocoder (1024 wide) on 1 s of audio: 100 stereo mel frames -> 24000 samples

Each component gets two fresh worker processes, one per side, which build it from the real config
(models/full_size.py here; the official configurators there) and then time it on command, alternating sides
(MLX first on even repetitions, official first on odd ones); each timed run follows a reference matmul
(2048^3 float32) on the same side, so every time is also given in units of that side's own matmul, which a
change of machine load affects alike. The table shows medians. Peak RSS is each worker's ru_maxrss (os.wait4):
weights + activations + the interpreter.

The MLX worker runs with OpenBLAS preloaded as stage processes run (orchestrator/runner.py stage_env); the
official worker runs under the oracle venv's python (torch 2.13 CPU + ltx-core 1.0.0, built by
shared/oracle/setup.sh) with torch.set_num_threads(2). This script imports neither MLX nor torch in its own
process: it runs under both interpreters, and the side-specific imports live in the worker functions.

    python benchmarks/compare_official.py                    # everything, 3 repetitions (~15 min on 2 cores)
    python benchmarks/compare_official.py --only vocoder,audio_decoder --reps 5
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
ORACLE_PYTHON = "/tmp/oracle-venv/bin/python"
COMPONENTS = ("block_s1", "block_s2", "vae_decoder", "upsampler", "audio_decoder", "vocoder")
BLOCK_TOKENS = {"block_s1": (16, 8, 12), "block_s2": (16, 16, 24)}  # latent (F, H, W) of each stage
AUDIO_TOKENS = 126  # 121 / 24 s x 25 latent frames per s
TEXT_TOKENS = 1024
VAE_LATENT = (2, 16, 24)  # 9 frames at 512x768
UPSAMPLER_LATENT = (16, 8, 12)
AUDIO_LATENT_FRAMES = 126
VOCODER_MEL_FRAMES = 100  # 1 s at 24 kHz, 240 samples per mel frame
REF_N = 2048


def _peak_rss_self() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def _serve(name: str, run, ref, sync) -> None:
    """The worker loop: 'ref' / 'run' -> seconds, 'quit' -> exit. One JSON line per answer on stdout."""
    print("READY " + json.dumps({"side": name, "rss": _peak_rss_self()}), flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "quit":
            return
        fn = {"ref": ref, "run": run}[cmd]
        t0 = time.perf_counter()
        sync(fn())
        dt = time.perf_counter() - t0
        print("TIME " + json.dumps({"cmd": cmd, "s": dt, "rss": _peak_rss_self()}), flush=True)


# ------------------------------------------------------------------------------------------------ MLX side
def mlx_configs() -> dict:
    """The real configs, as models/full_size.py holds them (printed for the official worker)."""
    from ltx2.models import full_size as fs

    return {"transformer": {**fs.TRANSFORMER, "num_layers": 1}, "vae": fs.VAE, "audio_vae": fs.AUDIO_VAE,
            "vocoder": fs.VOCODER, "upsampler": fs.SPATIAL_UPSAMPLER}


def mlx_worker(component: str, cfgs: dict) -> None:
    import mlx.core as mx
    import numpy as np

    mx.random.seed(0)
    normal = mx.random.normal
    if component.startswith("block"):
        from ltx2.models.transformer import LTX2Transformer, ModalityInput, TransformerConfig
        from ltx2.stages.sampling import audio_positions, video_positions

        model = LTX2Transformer(TransformerConfig.from_config({"transformer": cfgs["transformer"]}))
        mx.eval(model.parameters())
        c = model.config
        f, h, w = BLOCK_TOKENS[component]
        tv = f * h * w
        video = ModalityInput(latent=normal((1, tv, c.in_channels)), sigma=mx.array(0.7), timesteps=mx.full((1, tv), 0.7),
                              positions=None, context=normal((1, TEXT_TOKENS, c.caption_channels)) * 0.1)
        audio = ModalityInput(latent=normal((1, AUDIO_TOKENS, c.audio_in_channels)), sigma=mx.array(0.7),
                              timesteps=mx.full((1, AUDIO_TOKENS), 0.7), positions=None,
                              context=normal((1, TEXT_TOKENS, c.caption_channels)) * 0.1)
        tables = model.positional_tables(np.asarray(video_positions(f, h, w, 24.0)),
                                         np.asarray(audio_positions(AUDIO_TOKENS)))
        vs, as_ = model.prepare(video, audio, tables)
        mx.eval(vs, as_)
        block = model.transformer_blocks[0]
        skips = model.block_skips(None, 1, 0)

        def run():
            v, a = block(vs, as_, skips)
            return v.x, a.x
    elif component == "vae_decoder":
        from ltx2.models.video_vae import KeyNoise, VideoDecoder, VideoVAEConfig

        dec = VideoDecoder(VideoVAEConfig.from_config({"vae": cfgs["vae"]}))
        mx.eval(dec.parameters())
        latent = normal((1, *VAE_LATENT, 128))

        def run():
            return dec(latent, noise=KeyNoise(mx.random.key(1)))
    elif component == "upsampler":
        from ltx2.models.upsampler import LatentUpsampler, UpsamplerConfig

        up = LatentUpsampler(UpsamplerConfig.from_config(cfgs["upsampler"]))
        mx.eval(up.parameters())
        latent = normal((1, *UPSAMPLER_LATENT, 128))

        def run():
            return up(latent)
    elif component == "audio_decoder":
        from ltx2.models.audio_vae import AudioDecoder, AudioVAEConfig

        dec = AudioDecoder(AudioVAEConfig.from_config({"audio_vae": cfgs["audio_vae"]}))
        mx.eval(dec.parameters())
        latent = normal((1, 8, AUDIO_LATENT_FRAMES, 16))

        def run():
            return dec(latent)
    elif component == "vocoder":
        from ltx2.models.vocoder import Vocoder, VocoderConfig

        voc = Vocoder(VocoderConfig.from_config({"vocoder": cfgs["vocoder"]}))
        mx.eval(voc.parameters())
        mel = normal((1, 2, VOCODER_MEL_FRAMES, 64)) - 4.0

        def run():
            return voc(mel)
    else:
        raise SystemExit(f"unknown component {component}")
    a = normal((REF_N, REF_N))
    b = normal((REF_N, REF_N))
    mx.eval(a, b)
    _serve("mlx", run, lambda: a @ b, mx.eval)


# ------------------------------------------------------------------------------------------------ official side
def official_worker(component: str, cfgs: dict) -> None:
    import math

    import torch

    torch.set_num_threads(2)
    torch.set_grad_enabled(False)
    gen = torch.Generator().manual_seed(0)

    def randomize(module: torch.nn.Module) -> torch.nn.Module:
        # N(0, 1/fan_in) matrices, norm weights near 1, small vectors; buffers (statistics, filters) kept
        for name, p in module.named_parameters():
            if p.ndim == 0:
                continue
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p[0].numel()))
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
        return module.eval()

    def randn(*shape):
        return torch.randn(shape, generator=gen)

    if component.startswith("block"):
        from ltx_core.components.patchifiers import AudioPatchifier, VideoLatentPatchifier
        from ltx_core.guidance.perturbations import BatchedPerturbationConfig
        from ltx_core.model.transformer import LTXModelConfigurator, Modality
        from ltx_core.tools import AudioLatentTools, VideoLatentTools
        from ltx_core.types import AudioLatentShape, VideoLatentShape

        tcfg = cfgs["transformer"]
        model = LTXModelConfigurator.from_config({"transformer": tcfg})  # caption projections come on meta
        model = randomize(model.to_empty(device="cpu").float())
        f, h, w = BLOCK_TOKENS[component]
        vshape = VideoLatentShape(batch=1, channels=tcfg["in_channels"], frames=f, height=h, width=w)
        vstate = VideoLatentTools(VideoLatentPatchifier(patch_size=1), vshape, 24.0).create_initial_state(
            "cpu", torch.float32)
        ashape = AudioLatentShape(batch=1, channels=8, frames=AUDIO_TOKENS, mel_bins=16)
        astate = AudioLatentTools(AudioPatchifier(patch_size=1), ashape).create_initial_state("cpu", torch.float32)
        sigma = torch.tensor([0.7])
        tv = f * h * w
        video = Modality(latent=randn(1, tv, tcfg["in_channels"]), sigma=sigma, timesteps=torch.full((1, tv), 0.7),
                         positions=vstate.positions, context=randn(1, TEXT_TOKENS, tcfg["caption_channels"]) * 0.1)
        audio = Modality(latent=randn(1, AUDIO_TOKENS, tcfg["audio_in_channels"]), sigma=sigma,
                         timesteps=torch.full((1, AUDIO_TOKENS), 0.7), positions=astate.positions,
                         context=randn(1, TEXT_TOKENS, tcfg["caption_channels"]) * 0.1)
        vargs = model.video_args_preprocessor.prepare(video, audio)
        aargs = model.audio_args_preprocessor.prepare(audio, video)
        block = model.transformer_blocks[0]
        perturb = BatchedPerturbationConfig.empty(1)

        def run():
            return block(video=vargs, audio=aargs, perturbations=perturb)
    elif component == "vae_decoder":
        from ltx_core.model.video_vae import VideoDecoderConfigurator

        dec = randomize(VideoDecoderConfigurator.from_config({"vae": cfgs["vae"]}).float())
        latent = randn(1, 128, *VAE_LATENT)

        def run():
            return dec(latent, generator=torch.Generator().manual_seed(1))
    elif component == "upsampler":
        from ltx_core.model.upsampler import LatentUpsamplerConfigurator

        up = randomize(LatentUpsamplerConfigurator.from_config(cfgs["upsampler"]).float())
        latent = randn(1, 128, *UPSAMPLER_LATENT)

        def run():
            return up(latent)
    elif component == "audio_decoder":
        from ltx_core.model.audio_vae import AudioDecoderConfigurator

        dec = randomize(AudioDecoderConfigurator.from_config({"audio_vae": cfgs["audio_vae"]}).float())
        latent = randn(1, 8, AUDIO_LATENT_FRAMES, 16)

        def run():
            return dec(latent)
    elif component == "vocoder":
        from ltx_core.model.audio_vae import VocoderConfigurator

        voc = randomize(VocoderConfigurator.from_config({"vocoder": cfgs["vocoder"]}).float())
        mel = randn(1, 2, VOCODER_MEL_FRAMES, 64) - 4.0

        def run():
            return voc(mel)
    else:
        raise SystemExit(f"unknown component {component}")
    a, b = randn(REF_N, REF_N), randn(REF_N, REF_N)
    _serve("official", run, lambda: a @ b, lambda out: out)


# ------------------------------------------------------------------------------------------------ parent
def openblas() -> str | None:
    """The OpenBLAS a stage process would preload (orchestrator/runner.py's candidates; LTX2_BLAS overrides)."""
    choice = os.environ.get("LTX2_BLAS", "")
    if choice.lower() == "none":
        return None
    if choice:
        return choice
    for c in ("/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
              "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
              "/usr/lib/x86_64-linux-gnu/libopenblas.so.0", "/usr/lib64/libopenblas.so.0"):
        if Path(c).exists():
            return c
    return None


class Worker:
    def __init__(self, side: str, python: str, component: str, cfg_path: Path, env: dict):
        self.side = side
        self.proc = subprocess.Popen([python, str(HERE), "--worker", side, "--component", component,
                                      "--configs", str(cfg_path)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.ready = self._read("READY")

    def _read(self, tag: str) -> dict:
        for line in self.proc.stdout:
            if line.startswith(tag + " "):
                return json.loads(line[len(tag) + 1:])
            sys.stderr.write(f"[{self.side}] {line}")
        raise SystemExit(f"{self.side} worker ended early (status {self.proc.wait()})")

    def ask(self, cmd: str) -> float:
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self._read("TIME")["s"]

    def close(self) -> int:
        """Ends the worker; its peak RSS in bytes (wait4)."""
        self.proc.stdin.write("quit\n")
        self.proc.stdin.close()
        _, status, usage = os.wait4(self.proc.pid, 0)
        self.proc.stdout.close()
        if status != 0:
            raise SystemExit(f"{self.side} worker failed with status {status}")
        return usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def compare(component: str, reps: int, warmup: int, cfg_path: Path, oracle: str) -> dict:
    mlx_env = dict(os.environ)
    blas = openblas()
    if blas and blas not in mlx_env.get("LD_PRELOAD", ""):
        mlx_env["LD_PRELOAD"] = f"{blas} {mlx_env.get('LD_PRELOAD', '')}".strip()
    off_env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    t0 = time.time()
    workers = {"mlx": Worker("mlx", sys.executable, component, cfg_path, mlx_env),
               "official": Worker("official", oracle, component, cfg_path, off_env)}
    for side in ("mlx", "official"):
        for _ in range(warmup):  # first runs touch fresh memory and set up kernels on both sides
            print(f"  {component} warm-up {side}: {workers[side].ask('run'):.3f} s", flush=True)
    times: dict[str, list[float]] = {"mlx": [], "official": []}
    units: dict[str, list[float]] = {"mlx": [], "official": []}
    refs: dict[str, list[float]] = {"mlx": [], "official": []}
    for r in range(reps):
        for side in (("mlx", "official") if r % 2 == 0 else ("official", "mlx")):
            ref = workers[side].ask("ref")
            s = workers[side].ask("run")
            times[side].append(s)
            refs[side].append(ref)
            units[side].append(s / ref)
            print(f"  {component} rep {r} {side}: {s:.3f} s (ref matmul {ref:.3f} s)", flush=True)
    peaks = {side: w.close() for side, w in workers.items()}
    med = {side: statistics.median(v) for side, v in times.items()}
    med_u = {side: statistics.median(v) for side, v in units.items()}
    return {"component": component, "mlx_s": med["mlx"], "official_s": med["official"],
            "ratio": med["mlx"] / med["official"], "mlx_units": med_u["mlx"], "official_units": med_u["official"],
            "ratio_units": med_u["mlx"] / med_u["official"], "mlx_ref_s": statistics.median(refs["mlx"]),
            "official_ref_s": statistics.median(refs["official"]), "mlx_peak_rss": peaks["mlx"],
            "official_peak_rss": peaks["official"], "times": times, "wall_s": time.time() - t0}


def table(rows: list[dict]) -> str:
    head = ["component", "MLX s", "official s", "ratio", "MLX u", "official u", "ratio u", "MLX RSS GB",
            "official RSS GB"]
    cells = [[r["component"], f"{r['mlx_s']:.2f}", f"{r['official_s']:.2f}", f"{r['ratio']:.2f}",
              f"{r['mlx_units']:.1f}", f"{r['official_units']:.1f}", f"{r['ratio_units']:.2f}",
              f"{r['mlx_peak_rss'] / 2**30:.2f}", f"{r['official_peak_rss'] / 2**30:.2f}"] for r in rows]
    widths = [max(len(row[i]) for row in [head, *cells]) for i in range(len(head))]

    def line(row):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, cells)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=",".join(COMPONENTS), help=f"comma-separated subset of {', '.join(COMPONENTS)}")
    ap.add_argument("--reps", type=int, default=3, help="timed runs per side (the table shows medians)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs per side before the timed ones")
    ap.add_argument("--oracle-python", default=ORACLE_PYTHON,
                    help="python of a venv with torch + ltx-core 1.0.0 (bash shared/oracle/setup.sh VENV)")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--worker", choices=("mlx", "official"), help=argparse.SUPPRESS)
    ap.add_argument("--component", help=argparse.SUPPRESS)
    ap.add_argument("--configs", help=argparse.SUPPRESS)
    ap.add_argument("--print-configs", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.print_configs:
        print(json.dumps(mlx_configs()))
        return
    if args.worker:
        cfgs = json.loads(Path(args.configs).read_text())
        (mlx_worker if args.worker == "mlx" else official_worker)(args.component, cfgs)
        return
    only = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = set(only) - set(COMPONENTS)
    if unknown:
        raise SystemExit(f"unknown component(s) {sorted(unknown)}; known: {', '.join(COMPONENTS)}")
    if not Path(args.oracle_python).exists():
        raise SystemExit(f"no oracle python at {args.oracle_python}: bash shared/oracle/setup.sh /tmp/oracle-venv")
    cfg_path = Path(f"/tmp/compare_official_configs_{os.getpid()}.json")
    cfg_path.write_text(subprocess.run([sys.executable, str(HERE), "--print-configs"], check=True,
                                       capture_output=True, text=True).stdout)
    load = os.getloadavg()
    print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} CPUs); "
          f"OpenBLAS: {openblas()}", flush=True)
    rows = []
    t0 = time.time()
    try:
        for c in only:
            rows.append(compare(c, args.reps, args.warmup, cfg_path, args.oracle_python))
    finally:
        cfg_path.unlink(missing_ok=True)
    load = os.getloadavg()
    print(f"\nmedians of {args.reps} after {args.warmup} warm-up run(s) per side; u = seconds / the same side's 2048^3 float32 matmul (MLX+OpenBLAS vs torch); "
          f"ratio = MLX / official; load average at end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
          f"{time.time() - t0:.0f} s in all\n")
    print(table(rows))
    for r in rows:
        print(f"reference matmul {r['component']}: MLX {r['mlx_ref_s']:.3f} s, official {r['official_ref_s']:.3f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
