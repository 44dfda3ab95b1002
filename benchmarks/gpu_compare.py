"""MLX on CUDA against the official ltx-core on torch CUDA, side by side in one run: bf16, the real widths, random
weights shared by both sides.

Cases (each timed on both sides in the same process, outputs compared):

- one LTX-2 audio-video transformer block at stage-1 token counts (a 768x512x121 two-stage render: 16 x 8 x 12 =
  1536 video tokens, 126 audio tokens) and at stage-2 ones (16 x 16 x 24 = 6144 video tokens), the text context at
  its 1024 tokens; the official ``BasicAVTransformerBlock`` and ours (``AVTransformerBlock``, loaded through our
  loader from the official block's state dict saved in the checkpoint layout);
- the video VAE decoder on one official tile (512 px, 64 frames: a 9 x 16 x 16 latent -> 65 x 512 x 512 frames);
  the official ``VideoDecoder`` and ours, the same weights.

Both sides compute in bfloat16 (ours: ``compute: bfloat16``; the official modules ``.to(torch.bfloat16)``, as its
pipelines hold them). Timing: warm-up runs, then the median of ``--iters`` (``--vae-iters`` for the decoder; torch:
CUDA-synchronised; MLX: evaluated and synchronised). Each case prints its JSON line as it finishes, so a run cut off
by its time limit still reports the cases before.
Comparison: rel = ||ours - official|| / ||official||, judged against d = the same distance between the official bf16
and official float32 outputs (parity/precision.py's rule: ok within 2.5 d).

It needs torch with CUDA, ltx-core 1.0.0 and MLX with its CUDA backend; benchmarks/gpu_compare.sh sets them up on the
device machine from carried wheels (benchmarks/gpu_wheels.sh makes them here) and runs this in a few minutes on one
H100. The real widths come from ``--configs`` (written by gpu_wheels.sh from models/full_size.py, so the device
never imports the tiny-model generator and its audio dependencies). ``--smoke`` runs tiny widths on any device,
CPU included, to check the script itself.

    python benchmarks/gpu_compare.py --configs .gpu-compare/configs.json --out /tmp/gpu_compare.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

STAGES = {"stage1": ((16, 8, 12), 126), "stage2": ((16, 16, 24), 126)}  # latent grid, audio tokens
CONTEXT_TOKENS = 1024
TILE_LATENT = (9, 16, 16)  # 64 frames (+1) x 512 x 512 px: one official decode tile
TOL_FACTOR = 2.5

# --smoke: the same code paths at the tiny model's widths and toy token counts
SMOKE_STAGES = {"stage1": ((2, 2, 3), 5), "stage2": ((2, 4, 6), 5)}
SMOKE_CONTEXT = 8
SMOKE_TILE = (2, 2, 2)


# ------------------------------------------------------------------------------------------------- helpers
def rel(a, b) -> float:
    import numpy as np

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def timed_torch(fn, warmup: int, iters: int) -> tuple[object, float]:
    import torch

    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(iters):
        torch.cuda.synchronize() if torch.cuda.is_available() else None
        t0 = time.perf_counter()
        out = fn()
        torch.cuda.synchronize() if torch.cuda.is_available() else None
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


def timed_mlx(fn, warmup: int, iters: int) -> tuple[object, float]:
    import mlx.core as mx

    def run():
        out = fn()
        mx.eval(out)
        mx.synchronize()
        return out

    out = None
    for _ in range(warmup):
        out = run()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        out = run()
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


def to_np(t):
    """A torch tensor (any dtype, any device) as float32 numpy."""
    return t.detach().float().cpu().numpy()


def positions(f: int, h: int, w: int, a_tokens: int, fps: float = 24.0):
    """Token spans (B, axes, T, 2): video (t in seconds, y, x in pixels), audio (t in seconds): the shapes the
    samplers give (their exact values do not matter for a timing and agreement check)."""
    import numpy as np

    t, y, x = np.meshgrid(np.arange(f), np.arange(h), np.arange(w), indexing="ij")
    starts = np.stack([np.maximum(t * 8 - 7, 0) / fps, y * 32.0, x * 32.0]).reshape(3, -1)
    ends = np.stack([(t * 8 + 1) / fps, (y + 1) * 32.0, (x + 1) * 32.0]).reshape(3, -1)
    video = np.stack([starts, ends], -1)[None].astype(np.float32)
    at = np.arange(a_tokens, dtype=np.float32)
    audio = np.stack([at * 0.04, (at + 1) * 0.04], -1)[None, None].astype(np.float32)
    return video, audio


# ------------------------------------------------------------------------------------------------- the block
def block_case(cfg: dict, stage: str, stages: dict, context_tokens: int, device: str, warmup: int,
               iters: int, work: Path) -> dict:
    """One AV block, official vs ours, bf16; plus the official block in float32 for d."""
    import mlx.core as mx
    import numpy as np
    import torch
    from ltx_core.guidance.perturbations import BatchedPerturbationConfig
    from ltx_core.model.transformer.rope import LTXRopeType
    from ltx_core.model.transformer.transformer import BasicAVTransformerBlock, TransformerConfig as OfficialCfg
    from ltx_core.model.transformer.transformer_args import TransformerArgs
    from safetensors.torch import save_file

    from ltx2.models.transformer import LTX2Transformer, TransformerConfig
    from ltx2.models.transformer.block import StreamState
    from ltx2.models.transformer.streaming import TransformerWeights
    from ltx2.models.weights.modes import WeightsMode

    (f, h, w), a_tokens = stages[stage]
    vt = f * h * w
    vd = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    ad = cfg["audio_num_attention_heads"] * cfg["audio_attention_head_dim"]
    g = torch.Generator().manual_seed(0)
    official = BasicAVTransformerBlock(
        0, video=OfficialCfg(vd, cfg["num_attention_heads"], cfg["attention_head_dim"], vd),
        audio=OfficialCfg(ad, cfg["audio_num_attention_heads"], cfg["audio_attention_head_dim"], ad),
        rope_type=LTXRopeType.SPLIT, norm_eps=cfg.get("norm_eps", 1e-6))
    with torch.no_grad():
        for name, p in official.named_parameters():
            if "scale_shift_table" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
            elif p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))
            elif "norm" not in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    path = work / f"block-{stage}.safetensors"  # the checkpoint layout: our loader reads it as the official file
    one = {**cfg, "num_layers": 1}
    save_file({f"model.diffusion_model.transformer_blocks.0.{k}": v.to(torch.bfloat16).contiguous()
               for k, v in official.state_dict().items()}, str(path),
              metadata={"config": json.dumps({"transformer": one}), "model_version": "2.0"})
    ours = TransformerWeights(path, WeightsMode("bfloat16"), dtype=mx.bfloat16).block(0)

    # inputs: hidden tokens, text contexts, AdaLN modulations (per-token constant), RoPE tables (ours, for both)
    r = np.random.default_rng(1)
    arr = lambda *shape, s=1.0: (r.standard_normal(shape, dtype=np.float32) * s)  # noqa: E731
    x_v, x_a = arr(1, vt, vd), arr(1, a_tokens, ad)
    c_v, c_a = arr(1, context_tokens, vd, s=0.5), arr(1, context_tokens, ad, s=0.5)
    m_v, m_a = arr(1, 1, 6 * vd, s=0.1), arr(1, 1, 6 * ad, s=0.1)
    cm_v, cm_a = arr(1, 1, 4 * vd, s=0.1), arr(1, 1, 4 * ad, s=0.1)
    cg_v, cg_a = arr(1, 1, vd, s=0.1), arr(1, 1, ad, s=0.1)
    vpos, apos = positions(f, h, w, a_tokens)
    tables = LTX2Transformer(TransformerConfig.from_config({"transformer": one})).positional_tables(vpos, apos)

    def t(a, dtype):
        return torch.from_numpy(np.asarray(a)).to(device=device, dtype=dtype)

    def official_args(dtype):
        def args(x, c, m, cm, cg, rope, cross):
            return TransformerArgs(x=t(x, dtype), context=t(c, dtype), context_mask=None, timesteps=t(m, dtype),
                                   embedded_timestep=None,
                                   positional_embeddings=(t(rope.cos, dtype), t(rope.sin, dtype)),
                                   cross_positional_embeddings=(t(cross.cos, dtype), t(cross.sin, dtype)),
                                   cross_scale_shift_timestep=t(cm, dtype), cross_gate_timestep=t(cg, dtype),
                                   enabled=True)
        return (args(x_v, c_v, m_v, cm_v, cg_v, tables.video, tables.video_cross),
                args(x_a, c_a, m_a, cm_a, cg_a, tables.audio, tables.audio_cross))

    def run_official(block, dtype):
        v, a = official_args(dtype)
        with torch.no_grad():
            ov, oa = block(v, a, BatchedPerturbationConfig.empty(1))
        return ov.x, oa.x

    def state(x, c, m, cm, cg, rope, cross) -> StreamState:
        b = mx.bfloat16
        return StreamState(x=mx.array(x).astype(b), context=mx.array(c).astype(b), context_mask=None,
                           modulation=mx.array(m).astype(b), embedded_timestep=mx.zeros((1, 1, x.shape[-1]), b),
                           rope=rope, cross_rope=cross, cross_modulation=mx.array(cm).astype(b),
                           cross_gate=mx.array(cg).astype(b))

    vs = state(x_v, c_v, m_v, cm_v, cg_v, tables.video, tables.video_cross)
    as_ = state(x_a, c_a, m_a, cm_a, cg_a, tables.audio, tables.audio_cross)
    skips = LTX2Transformer.block_skips(None, 1, 0)

    def run_ours():
        v, a = ours(vs, as_, skips)
        return v.x, a.x

    ref32 = [to_np(o) for o in run_official(official.to(device=device, dtype=torch.float32), torch.float32)]
    off16 = official.to(dtype=torch.bfloat16)
    (ov, oa), t_off = timed_torch(lambda: run_official(off16, torch.bfloat16), warmup, iters)
    (mv, ma), t_mlx = timed_mlx(run_ours, warmup, iters)
    out = {"case": f"AV block, {stage} ({vt} video + {a_tokens} audio tokens)", "official_s": t_off, "mlx_s": t_mlx}
    for name, o, m, r32 in (("video", ov, mv, ref32[0]), ("audio", oa, ma, ref32[1])):
        d = rel(to_np(o), r32)
        got = rel(np.array(m.astype(mx.float32)), to_np(o))
        out[f"{name}_rel_vs_official_bf16"] = got
        out[f"{name}_d_official_bf16_vs_f32"] = d
        out[f"{name}_rel_vs_official_f32"] = rel(np.array(m.astype(mx.float32)), r32)
        out[f"{name}_ok"] = got <= TOL_FACTOR * d
    del official, off16, ours
    return out


# ------------------------------------------------------------------------------------------------- the VAE
def vae_case(vae_cfg: dict, tile: tuple[int, int, int], device: str, warmup: int, iters: int, work: Path) -> dict:
    """The video VAE decoder on one tile, official vs ours, bf16; plus the official decoder in float32 for d."""
    import mlx.core as mx
    import numpy as np
    import torch
    from ltx_core.model.video_vae import VideoDecoderConfigurator
    from safetensors.torch import save_file

    from ltx2.models.video_vae import load_video_decoder

    g = torch.Generator().manual_seed(2)
    official = VideoDecoderConfigurator.from_config({"vae": vae_cfg}).eval()
    with torch.no_grad():
        for name, p in official.named_parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel()))
            elif p.ndim == 1:
                p.copy_((1.0 if "norm" in name else 0.0) + torch.randn(p.shape, generator=g) * 0.02)
        for name, b in official.named_buffers():
            if name.endswith("std-of-means"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g))
            elif name.endswith("mean-of-means"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.2)
    sd = {("vae." + k) if k.startswith("per_channel_statistics.") else f"vae.decoder.{k}": v.to(torch.bfloat16)
          if v.is_floating_point() and v.ndim > 0 else v for k, v in official.state_dict().items()}
    path = work / "vae-decoder.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path), metadata={"config": json.dumps({"vae": vae_cfg})})
    ours = load_video_decoder(path, mx.bfloat16)
    f, h, w = tile
    latent = np.random.default_rng(3).standard_normal((1, vae_cfg["latent_channels"], f, h, w), dtype=np.float32)
    if ours.needs_noise:  # LTX-2's decoder draws none; one that does would need the same noise on both sides
        raise SystemExit("gpu_compare: this VAE config draws decoder noise: use LTX-2's")

    def run_official(dtype):
        lat = torch.from_numpy(latent).to(device=device, dtype=dtype)
        with torch.no_grad():
            return official(lat)

    official.to(device=device, dtype=torch.float32)
    ref32 = to_np(run_official(torch.float32))
    official.to(dtype=torch.bfloat16)
    lat_mlx = mx.array(np.moveaxis(latent, 1, -1))
    o, t_off = timed_torch(lambda: run_official(torch.bfloat16), warmup, iters)
    m, t_mlx = timed_mlx(lambda: ours(lat_mlx), warmup, iters)
    ours_np = np.moveaxis(np.array(m.astype(mx.float32)), -1, 1)
    d = rel(to_np(o), ref32)
    got = rel(ours_np, to_np(o))
    return {"case": f"VAE decoder, one tile ({f}x{h}x{w} latent -> {tuple(ours_np.shape[2:])} px)",
            "official_s": t_off, "mlx_s": t_mlx, "video_rel_vs_official_bf16": got,
            "video_d_official_bf16_vs_f32": d, "video_rel_vs_official_f32": rel(ours_np, ref32),
            "video_ok": got <= TOL_FACTOR * d}


# ------------------------------------------------------------------------------------------------- main
def smoke_configs() -> dict:
    """The tiny model's transformer and VAE configs (--smoke, on this project's machines: importing the tiny-model
    package brings its audio dependencies, which the device run does without)."""
    from ltx2.models.tiny import configs

    return {"transformer": configs.TRANSFORMER, "vae": configs.VAE}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default=".gpu-compare/configs.json", help="the real transformer and VAE configs "
                    "(gpu_wheels.sh writes them from models/full_size.py)")
    ap.add_argument("--cases", default="stage1,stage2,vae")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--vae-iters", type=int, default=2, help="timed VAE decodes (each seconds long; default 2)")
    ap.add_argument("--out", default=None, help="write the results (JSON) here")
    ap.add_argument("--smoke", action="store_true", help="toy widths on whatever device there is")
    args = ap.parse_args()

    import mlx.core as mx
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if not args.smoke and (device != "cuda" or mx.default_device().type != mx.DeviceType.gpu):
        raise SystemExit(f"gpu_compare: needs torch CUDA and MLX's CUDA backend (torch: {device}, MLX: "
                         f"{mx.default_device()}); --smoke checks the script on any device")
    configs = smoke_configs() if args.smoke else json.loads(Path(args.configs).read_text())
    stages = SMOKE_STAGES if args.smoke else STAGES
    ctx_tokens = SMOKE_CONTEXT if args.smoke else CONTEXT_TOKENS
    tile = SMOKE_TILE if args.smoke else TILE_LATENT
    env = {"torch": torch.__version__, "mlx": mx.__version__, "mlx_device": str(mx.default_device()),
           "gpu": torch.cuda.get_device_name(0) if device == "cuda" else "cpu"}
    print(json.dumps(env), flush=True)
    results = []
    t_start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases.split(","):
            t0 = time.time()
            if case in stages:
                r = block_case(configs["transformer"], case, stages, ctx_tokens, device, args.warmup, args.iters,
                               Path(tmp))
            elif case == "vae":
                r = vae_case(configs["vae"], tile, device, args.warmup, args.vae_iters, Path(tmp))
            else:
                raise SystemExit(f"unknown case {case!r}")
            r["case_wall_s"] = time.time() - t0
            results.append(r)
            print(json.dumps(r), flush=True)
            if device == "cuda":
                torch.cuda.empty_cache()
            mx.clear_cache()
    print()
    print(f"{'case':58s} {'official s':>10s} {'MLX s':>9s} {'MLX/off':>8s}  agreement (rel vs official bf16, d)")
    for r in results:
        parts = []
        for out in ("video", "audio"):
            if f"{out}_ok" in r:
                parts.append(f"{out} {r[f'{out}_rel_vs_official_bf16']:.2e} (d {r[f'{out}_d_official_bf16_vs_f32']:.2e}, "
                             f"{'ok' if r[f'{out}_ok'] else 'OFF'})")
        print(f"{r['case']:58s} {r['official_s']:10.4f} {r['mlx_s']:9.4f} {r['mlx_s'] / r['official_s']:8.2f}  "
              + "; ".join(parts))
    print(f"total {time.time() - t_start:.0f} s")
    if args.out:
        Path(args.out).write_text(json.dumps({"env": env, "results": results}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
