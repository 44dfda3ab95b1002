"""Peak memory of the video-encode and audio-encode stages at the REAL encoder widths, against their estimates.

Random bf16 weights in the official layout are written to a real safetensors file (only ``vae.encoder.*``,
``audio_vae.encoder.*`` and their statistics): the LTX-2.3 video VAE encoder by default (``--version 2.3``: 128 ->
1024 wide, res_x 4/6/4/2/2, 1.2 GiB in float32), or LTX-2.0's (``--version 2.0``: 128 -> 2048 wide, res_x
4/6/6/2/2, 2.6 GiB in float32); the audio VAE encoder at ch 128 (0.08 GiB). A lossless mp4 of smooth moving colour
(``--video FRAMES,HEIGHT,WIDTH``, default the 121 x 512 x 768 the memory planner must fit) and a stereo 16 kHz wav
(``--audio-seconds``) are the inputs.

Each case runs the stage itself (``stages.base.execute``, as ``ltx2 stage`` does) in its own subprocess with
OpenBLAS preloaded; its peak RSS is the child's ru_maxrss (os.wait4), its MLX peak what MLX allocated at most
(``mx.get_peak_memory``: allocated pages count against the stage's data-segment cap, RLIMIT_DATA, whether or not
they were ever touched, so the estimate must bound this too), the estimate the stage's own
``estimate().total`` (weights, activations, the process baseline), the tiling the one the planner picks under
``--budget-gb`` (the first of the stage's ``choices`` whose estimate fits, as orchestrator/planner.py picks), and
``untiled`` when that estimate fits the budget (else it is skipped and says so).

A full run at 121 x 512 x 768 takes about half an hour on 2 CPU cores (~115 TFLOP of convolutions). Quick check
(~2 minutes):
    python benchmarks/encode_memory.py --video 9,512,768
The last full run (2-core Linux CPU, load average ~9, LTX-2.3 encoders): video-encode 121x512x768 at the planner's
tiles 512 px/64: peak RSS 8.02 GiB, MLX peak 9.01 GiB, estimate 12.09 GiB, 4521 s; audio-encode 5 s: 0.45 GiB RSS,
0.76 GiB MLX peak, estimate 1.21 GiB.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _memory_common import GiB, emit, gb, run_child, table, write_random_bf16  # noqa: E402

RES = lambda n: ["res_x", {"num_layers": n}]  # noqa: E731
# The video VAE encoder blocks of the LTX-2.3 checkpoint's config metadata (tests/models/test_video_vae.py
# test_real_ltx23_config_is_accepted); LTX-2.0's are models/full_size.VAE's.
ENCODER_LTX23 = [RES(4), ["compress_space_res", {"multiplier": 2}], RES(6), ["compress_time_res", {"multiplier": 2}],
                 RES(4), ["compress_all_res", {"multiplier": 2}], RES(2), ["compress_all_res", {"multiplier": 1}],
                 RES(2)]


def config(version: str) -> dict:
    from ltx2.models.full_size import AUDIO_VAE, VAE

    vae = dict(VAE, encoder_blocks=ENCODER_LTX23, spatial_padding_mode="zeros") if version == "2.3" else VAE
    return {"vae": vae, "audio_vae": AUDIO_VAE}


def make_checkpoint(path: Path, version: str) -> None:
    from ltx2.models.audio_vae import AudioEncoder, AudioVAEConfig
    from ltx2.models.audio_vae.loading import to_checkpoint as audio_checkpoint
    from ltx2.models.layouts import shapes
    from ltx2.models.video_vae import VideoEncoder, VideoVAEConfig
    from ltx2.models.video_vae.loading import to_checkpoint as video_checkpoint

    cfg = config(version)
    layout = shapes(video_checkpoint(encoder=VideoEncoder(VideoVAEConfig.from_config(cfg))))  # lazy: nothing evaluated
    layout.update(shapes(audio_checkpoint(encoder=AudioEncoder(AudioVAEConfig.from_config(cfg)))))
    t0 = time.time()
    size = write_random_bf16(path, layout, {"config": json.dumps(cfg), "model_version": {"2.3": "2.3.0"}.get(version,
                                                                                                          "2.0")})
    print(f"wrote {path.name} ({size / GiB:.2f} GiB random bf16, LTX-{version} encoders) in {time.time() - t0:.0f} s",
          flush=True)


def make_video(path: Path, frames: int, height: int, width: int, fps: int = 24) -> None:
    """Smooth moving colour, lossless H.264 (RGB), written a frame at a time (the parent must stay small)."""
    import av
    import numpy as np

    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264rgb", rate=Fraction(fps))
        s.width, s.height, s.pix_fmt = width, height, "rgb24"
        s.options = {"crf": "0", "preset": "ultrafast"}
        for t in range(frames):
            rgb = np.stack([np.sin(x / 37 + t / 5), np.cos(y / 23 - t / 7), np.sin((x + y) / 51 + t / 3)], -1)
            frame = av.VideoFrame.from_ndarray(((rgb + 1) * 127.5).astype(np.uint8), format="rgb24")
            for packet in s.encode(frame):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)


def make_wav(path: Path, seconds: float, rate: int = 16000) -> None:
    import av
    import numpy as np

    t = np.arange(int(seconds * rate)) / rate
    wave = np.stack([0.4 * np.sin(2 * np.pi * 220 * t), 0.4 * np.sin(2 * np.pi * 330 * t)]).astype(np.float32)
    with av.open(str(path), "w", format="wav") as c:
        s = c.add_stream("pcm_f32le", rate=rate, layout="stereo")
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave.T.reshape(1, -1)), format="flt", layout="stereo")
        frame.sample_rate = rate
        for packet in s.encode(frame):
            c.mux(packet)
        for packet in s.encode():
            c.mux(packet)


def context(stage: str, inputs: dict, params: dict, checkpoint: Path, budget: int | None):
    from ltx2.stages.contract import Progress
    from ltx2.stages.registry import StageContext, stage_def

    st = stage_def(stage)
    return StageContext(st, inputs, Path("/nonexistent.zarr"), st.parse_params(params), {"checkpoint": checkpoint},
                        "", budget, Progress(stage, None))


def planned_tiling(video: Path, params: dict, checkpoint: Path, budget: int):
    """The tiling the planner picks: the first of the stage's choices whose estimate fits (None: untiled)."""
    from ltx2.stages import video_encode

    ctx = context("video-encode", {"video": video}, params, checkpoint, budget)
    for update, label in video_encode.choices(ctx):
        trial = context("video-encode", {"video": video}, {**params, **update}, checkpoint, budget)
        if video_encode.estimate(trial).total <= budget:
            return update["tiling"], label
    raise SystemExit(f"nothing fits {budget / GiB:.1f} GiB")


# ------------------------------------------------------------------------------------------------ child
def child(args) -> None:
    import mlx.core as mx

    from ltx2.stages.base import execute

    spec = json.loads(args.child)
    out = Path(spec["out"])
    t0 = time.time()
    rc = execute(spec["stage"], [(p, Path(f)) for p, f in spec["inputs"].items()], out, spec["params"],
                 {"checkpoint": Path(spec["checkpoint"])}, None, None, None)
    if rc != 0:
        raise SystemExit(f"{spec['stage']} exited {rc}")
    emit({"seconds": time.time() - t0, "mlx_peak": mx.get_peak_memory()})


def measure(script: str, stage: str, inputs: dict, params: dict, checkpoint: Path, work: Path, name: str) -> dict:
    from ltx2.stages.registry import stage_def

    est = stage_def(stage).estimate(context(stage, inputs, params, checkpoint, None))
    spec = {"stage": stage, "inputs": {k: str(v) for k, v in inputs.items()}, "params": params,
            "checkpoint": str(checkpoint), "out": str(work / f"{name}.zarr")}
    r = run_child(script, ["--child", json.dumps(spec)], timeout=4 * 3600)
    r.update(name=name, estimate=est.total, weights=est.weights_bytes, activations=est.activations_bytes)
    print(f"{name}: peak RSS {gb(r['peak_rss'])} GiB, MLX peak {gb(r['mlx_peak'])} GiB, estimate {gb(est.total)} GiB "
          f"(weights {gb(est.weights_bytes)} + activations {gb(est.activations_bytes)} + process "
          f"{gb(est.baseline_bytes)}), measured / estimate {r['peak_rss'] / est.total:.2f}, {r['seconds']:.0f} s "
          f"(parent peak {gb(r['parent_peak_rss'])} GiB)", flush=True)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", choices=("2.0", "2.3"), default="2.3")
    ap.add_argument("--video", default="121,512,768", help="frames,height,width (default 121,512,768)")
    ap.add_argument("--budget-gb", type=float, default=16.0, help="the memory budget the planner fits (GiB)")
    ap.add_argument("--modes", default="planned,untiled,audio", help="planned (the planner's tiling), untiled, audio")
    ap.add_argument("--tiling", default=None, help="YAML tiles to measure instead of the planner's, e.g. "
                                                   "'{spatial_tile: 512, spatial_overlap: 64}'")
    ap.add_argument("--audio-seconds", type=float, default=5.0)
    ap.add_argument("--work", default=None, help="folder for the files (default: a temporary one)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)

    import yaml

    from ltx2.stages.contract import PROCESS_BASELINE_BYTES

    frames, height, width = (int(v) for v in args.video.split(","))
    modes = [m for m in args.modes.split(",") if m]
    budget = int(args.budget_gb * GiB)
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        ckpt = work / f"encoders-{args.version}.safetensors"
        make_checkpoint(ckpt, args.version)
        rows = []
        if "planned" in modes or "untiled" in modes:
            video = work / "clip.mp4"
            make_video(video, frames, height, width)
            params = {"width": width, "height": height, "frames": frames, "fps": 24}
            cases = []
            if "planned" in modes:
                if args.tiling:
                    tiling, label = yaml.safe_load(args.tiling), "tiles " + args.tiling
                else:
                    tiling, label = planned_tiling(video, params, ckpt, budget)
                    tiling = tiling if tiling is None else tiling.model_dump(exclude_none=True)
                print(f"video-encode {frames}x{height}x{width}: the planner's choice under {args.budget_gb:g} GiB: "
                      f"{label}", flush=True)
                cases.append((f"video {label}", {**params, "tiling": tiling}))
            if "untiled" in modes and not any(c[1]["tiling"] is None for c in cases):
                need = context("video-encode", {"video": video}, params, ckpt, None)
                total = need.stage.estimate(need).total
                if total <= budget:
                    cases.append(("video untiled", params))
                else:
                    print(f"video untiled: skipped, estimated {gb(total)} GiB is over the {args.budget_gb:g} GiB "
                          "budget", flush=True)
            for name, p in cases:
                r = measure(__file__, "video-encode", {"video": video}, p, ckpt, work, name.replace(" ", "_"))
                rows.append([name, f"{frames}x{height}x{width}", r])
        if "audio" in modes:
            wav = work / "voice.wav"
            make_wav(wav, args.audio_seconds)
            fps, clip_frames = 24, int(args.audio_seconds * 24) + 1
            r = measure(__file__, "audio-encode", {"audio": wav}, {"frames": clip_frames, "fps": fps}, ckpt, work,
                        "audio")
            rows.append([f"audio {args.audio_seconds:g} s", "-", r])
    print()
    print(table([[n, shape, gb(r["peak_rss"]), gb(r["mlx_peak"]), gb(r["estimate"]),
                  f"{r['peak_rss'] / r['estimate']:.2f}",
                  f"{(r['mlx_peak'] + PROCESS_BASELINE_BYTES) / r['estimate']:.2f}",
                  f"{r['seconds']:.0f}"] for n, shape, r in rows],
                ["case", "video", "peak RSS GiB", "MLX peak GiB", "estimate GiB", "RSS/estimate",
                 "(MLX+process)/estimate", "s"]))


if __name__ == "__main__":
    main()
