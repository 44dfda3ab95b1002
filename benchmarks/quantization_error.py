"""Error of 8/4-bit affine quantisation at FULL width, on random weights: LTX-2 transformer blocks and
Gemma-3-12B decoder layers. Prints the relative error ||q - f|| / ||f|| of outputs and the bytes per block.

    python benchmarks/quantization_error.py [--video-tokens 1536] [--audio-tokens 126] [--text-tokens 1024]
                                            [--blocks 2] [--gemma-tokens 1024] [--layers 2] [--groups 32,64,128]

What is measured
- Widths are the real ones: transformer video 4096 (32 heads x 128), audio 2048 (32 x 64), FF 4x, text
  context 3840 wide (1024 tokens); Gemma-3-12B hidden 3840, 16 query heads / 8 KV heads of 256,
  MLP 15360. Only ``--blocks`` transformer blocks / ``--layers`` Gemma layers (real: 48 / 48).
- Token counts default to a 768x512x121 render's stage 1 (half resolution, 384x256: 16 x 8 x 12 =
  1536 video tokens; 121 frames at 24 fps = 126 audio tokens); ``--video-tokens 6144`` is stage 2.
- Weights: random, scaled as the oracle's ``randomize_`` (matrices normal / sqrt(fan-in); norm
  weights 1 + 0.1 n, Gemma's 0.1 n as it multiplies by 1 + w; other vectors 0.1 n), then rounded to
  bf16 as the official checkpoint holds them. The float reference uses those bf16 values in float32.
- Quantised: the policy of models/weights/quantize.py (every Linear inside a block) with MLX's
  ``mx.quantize`` from float32 (float32 scales and biases, as ``ltx2 convert`` stores them). The
  quantised layers are run as ``x @ dequantize(W_q).T`` in float32 through BLAS: MLX's CPU
  ``quantized_matmul`` is unthreaded and far slower, and its result equals that product to float32
  rounding, which is checked on one full-width layer below; so the error printed is the
  quantisation's, not an accumulation artefact (all activations float32).
- Two errors per setting: ``block`` is one block's update (output - input) with the float input
  fed to the quantised block, averaged over the blocks, the error each block adds by itself;
  ``output`` is end to end through all the blocks (transformer: the velocities after the output
  projection, which carries the residual stream; Gemma: the last hidden state after the final norm).
- Bytes per block: in a converted file (float tensors bf16, scales / biases float32) and held for
  float32 compute (float tensors float32).

On Linux run it with OpenBLAS preloaded (it re-executes itself with it when found, as the stage runner
does): LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0 makes float32 matmul
about 50x faster than the reference BLAS of MLX's Linux wheel.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_unflatten


def _ensure_blas() -> None:
    from ltx2.orchestrator.runner import stage_env

    env = stage_env()
    if env.get("LD_PRELOAD") and env.get("LD_PRELOAD") != os.environ.get("LD_PRELOAD") \
            and not os.environ.get("LTX2_BENCH_REEXEC"):
        env["LTX2_BENCH_REEXEC"] = "1"
        os.execve(sys.executable, [sys.executable, *sys.argv], env)


# ------------------------------------------------------------------------------------------- weights

def randomize(module: nn.Module, seed: int, *, norm_offset: float = 1.0) -> None:
    """The oracle's scaling rules, in MLX, each tensor then rounded to bf16 (the checkpoint's precision)."""
    params = tree_flatten(module.parameters())
    keys = mx.random.split(mx.random.key(seed), len(params))
    new = []
    for k, (name, p) in zip(keys, params):
        if p.ndim >= 2:
            v = mx.random.normal(p.shape, key=k) / math.sqrt(math.prod(p.shape[1:]))
        elif name.endswith("weight") and "norm" in name:
            v = norm_offset + 0.1 * mx.random.normal(p.shape, key=k)
        else:
            v = 0.1 * mx.random.normal(p.shape, key=k)
        v = v.astype(mx.bfloat16).astype(mx.float32)
        mx.eval(v)
        new.append((name, v))
    module.update(tree_unflatten(new))


def block_linears(module: nn.Module, root: str) -> dict[str, nn.Linear]:
    """The Linear layers of ``module`` (at model path ``root``) that the quantisation policy takes."""
    from ltx2.models.weights.quantize import should_quantize

    return {p: m for p, m in tree_flatten(module.leaf_modules(), is_leaf=lambda x: isinstance(x, nn.Module))
            if should_quantize(f"{root}{p}", m, 32)}  # every layer here has inputs divisible by 128


class Swapped:
    """Within the block, replace each quantised layer's weight by its dequantised value; restore after."""

    def __init__(self, layers: dict[str, nn.Linear], bits: int, group_size: int):
        self.layers, self.bits, self.gs = layers, bits, group_size

    def __enter__(self):
        self.saved = {}
        for p, lin in self.layers.items():
            self.saved[p] = lin.weight
            wq, s, b = mx.quantize(lin.weight, self.gs, self.bits)
            lin.weight = mx.dequantize(wq, s, b, group_size=self.gs, bits=self.bits)
            mx.eval(lin.weight)
        return self

    def __exit__(self, *exc):
        for p, lin in self.layers.items():
            lin.weight = self.saved[p]


def bytes_per_block(block: nn.Module, root: str, bits: int | None, group_size: int) -> tuple[int, int]:
    """(bytes in a converted file, bytes held for float32 compute) of one (lazily built) block."""
    from ltx2.models.weights.quantize import quantize_module

    holder = nn.Module()
    setattr(holder, root.split(".")[0], [block])  # the policy keys on the path: "<list>.0."
    if bits is not None:
        quantize_module(holder, bits, group_size)
    file = held = 0
    for name, v in tree_flatten(holder.parameters()):
        if v.dtype == mx.uint32 or name.endswith((".scales", ".biases")):
            file += v.size * v.itemsize
            held += v.size * v.itemsize
        else:
            file += v.size * 2
            held += v.size * 4
    return file, held


def check_quantized_matmul(width_in: int, width_out: int, bits: int, group_size: int) -> float:
    """Relative difference between MLX's quantized_matmul and x @ dequantize(W).T (float32)."""
    w = (mx.random.normal((width_out, width_in)) / math.sqrt(width_in)).astype(mx.bfloat16).astype(mx.float32)
    x = mx.random.normal((64, width_in))
    wq, s, b = mx.quantize(w, group_size, bits)
    y_q = mx.quantized_matmul(x, wq, s, b, transpose=True, group_size=group_size, bits=bits)
    y_d = x @ mx.dequantize(wq, s, b, group_size=group_size, bits=bits).T
    return float(mx.linalg.norm(y_q - y_d) / mx.linalg.norm(y_d))


def rel(a: mx.array, b: mx.array) -> float:
    return float(mx.linalg.norm((a - b).astype(mx.float32)) / mx.linalg.norm(b.astype(mx.float32)))


def _gb(n: int) -> str:
    return f"{n / 2**30:6.3f} GiB"


# ------------------------------------------------------------------------------------------- transformer

def transformer_config(blocks: int) -> dict:
    from ltx2.models.tiny.configs import TRANSFORMER

    t = dict(TRANSFORMER)
    t.update(num_layers=blocks, num_attention_heads=32, attention_head_dim=128, cross_attention_dim=4096,
             in_channels=128, out_channels=128, audio_num_attention_heads=32, audio_attention_head_dim=64,
             audio_cross_attention_dim=2048, audio_in_channels=128, audio_out_channels=128, caption_channels=3840,
             connector_num_attention_heads=30, connector_attention_head_dim=128)
    return {"transformer": t}


def run_transformer(args, settings) -> list[str]:
    from ltx2.models.transformer import BlockConfig, LTX2Transformer, ModalityInput, TransformerConfig
    from ltx2.models.transformer.block import AVTransformerBlock
    from ltx2.stages.sampling import audio_positions, video_positions

    cfg = TransformerConfig.from_config(transformer_config(args.blocks))
    t0 = time.time()
    model = LTX2Transformer(cfg)
    randomize(model, 0)
    # the video grid: frames x height x width latent tokens (stage 1 of 768x512x121: 16 x 8 x 12)
    f = 16
    hw = args.video_tokens // f
    h = int(math.sqrt(hw * 2 / 3)) or 1
    while hw % h:
        h -= 1
    grid = (f, h, hw // h)
    key = mx.random.key(123)
    kv, ka, kc1, kc2 = mx.random.split(key, 4)
    n_a, n_t = args.audio_tokens, args.text_tokens
    video = ModalityInput(latent=mx.random.normal((1, math.prod(grid), 128), key=kv), sigma=mx.array([0.7]),
                          timesteps=mx.full((1, math.prod(grid)), 0.7),
                          positions=video_positions(*grid, 24.0), context=mx.random.normal((1, n_t, 3840), key=kc1))
    audio = ModalityInput(latent=mx.random.normal((1, n_a, 128), key=ka), sigma=mx.array([0.7]),
                          timesteps=mx.full((1, n_a), 0.7), positions=audio_positions(n_a),
                          context=mx.random.normal((1, n_t, 3840), key=kc2))
    print(f"transformer: {args.blocks} blocks at full width, video grid {grid} = {math.prod(grid)} tokens, "
          f"{n_a} audio tokens, {n_t} text tokens (random weights ready in {time.time() - t0:.0f} s)", flush=True)
    tables = model.positional_tables(video.positions, audio.positions)
    vs, as_ = model.prepare(video, audio, tables)
    mx.eval(vs.x, as_.x, vs.modulation, as_.modulation, vs.context, as_.context)
    blocks = model.transformer_blocks

    def run_block(i, s):
        out = blocks[i](s[0], s[1], LTX2Transformer.block_skips(None, 1, i))
        mx.eval(out[0].x, out[1].x)
        return out

    t0 = time.time()
    float_states = [(vs, as_)]
    for i in range(len(blocks)):
        float_states.append(run_block(i, float_states[-1]))
    ref = model.finish(*float_states[-1])
    mx.eval(ref)
    dt = (time.time() - t0) / len(blocks)
    print(f"  float32 forward: {dt:.1f} s per block", flush=True)
    linears = [block_linears(b, f"transformer_blocks.{i}.") for i, b in enumerate(blocks)]
    rows = []
    for bits, gs in settings:
        t0 = time.time()
        upd_v, upd_a = [], []
        s = (vs, as_)
        for i in range(len(blocks)):
            with Swapped(linears[i], bits, gs):
                iso = run_block(i, float_states[i])  # the float input: this block's own error
                s = run_block(i, s)  # the quantised chain
            fin, fout = float_states[i], float_states[i + 1]
            upd_v.append(rel(iso[0].x - fin[0].x, fout[0].x - fin[0].x))
            upd_a.append(rel(iso[1].x - fin[1].x, fout[1].x - fin[1].x))
            del iso
        out = model.finish(*s)
        mx.eval(out)
        lazy = AVTransformerBlock(BlockConfig(4096, 32, 128, 2048, 32, 64, cfg.norm_eps))
        fb, hb = bytes_per_block(lazy, "transformer_blocks.0.", bits, gs)
        rows.append(f"| q{bits} g{gs:<3} | {sum(upd_v) / len(upd_v):8.4%} | {sum(upd_a) / len(upd_a):8.4%} | "
                    f"{rel(out[0], ref[0]):8.4%} | {rel(out[1], ref[1]):8.4%} | {_gb(fb)} | {_gb(hb)} |")
        print(f"  q{bits} g{gs}: {time.time() - t0:.0f} s", flush=True)
    lazy = AVTransformerBlock(BlockConfig(4096, 32, 128, 2048, 32, 64, cfg.norm_eps))
    fb, hb = bytes_per_block(lazy, "transformer_blocks.0.", None, 64)
    head = ["", f"LTX-2 transformer block (video 4096 / audio 2048, 32 heads, FF x4), {math.prod(grid)} video / "
                f"{n_a} audio / {n_t} text tokens, {args.blocks} blocks; relative error vs float32",
            "| weights  | block video | block audio | out video | out audio | bytes/block file | bytes/block held |",
            "|----------|----------|----------|----------|----------|------------|------------|",
            f"| float    |        - |        - |        - |        - | {_gb(fb)} | {_gb(hb)} |"]
    return head + rows


# ------------------------------------------------------------------------------------------- Gemma

def gemma_config(layers: int) -> dict:
    return {"model_type": "gemma3_text", "hidden_size": 3840, "intermediate_size": 15360,
            "num_hidden_layers": layers, "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 256,
            "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-6, "rope_theta": 1_000_000,
            "rope_local_base_freq": 10_000, "rope_scaling": {"rope_type": "linear", "factor": 8.0},
            "sliding_window": 1024, "vocab_size": 4096,
            "layer_types": ["sliding_attention" if (i + 1) % 6 else "full_attention" for i in range(layers)]}


def run_gemma(args, settings) -> list[str]:
    from ltx2.models.text.gemma import GemmaConfig, GemmaEncoder

    config = GemmaConfig.from_config(gemma_config(args.layers))
    t0 = time.time()
    enc = GemmaEncoder(config)
    randomize(enc, 1, norm_offset=0.0)
    n = args.gemma_tokens
    ids = mx.random.randint(0, config.vocab_size, (1, n), key=mx.random.key(7))
    mask = mx.ones((1, n), dtype=mx.int32)
    print(f"Gemma-3-12B width: {args.layers} layers, {n} tokens (random weights ready in {time.time() - t0:.0f} s)",
          flush=True)
    m = enc.model
    h0 = m.embed_tokens(ids) * mx.array(math.sqrt(config.hidden_size), dtype=mx.float32)
    masks = enc._masks(mask, h0.dtype)

    def run_layer(i, h):  # GemmaEncoder.__call__'s loop body
        layer, kind = m.layers[i], config.layer_types[i]
        am, keep = masks[kind]
        h = h + layer.post_attention_layernorm(layer.self_attn(layer.input_layernorm(h), am) * keep)
        h = h + layer.post_feedforward_layernorm(layer.mlp(layer.pre_feedforward_layernorm(h)))
        mx.eval(h)
        return h

    t0 = time.time()
    states = [h0]
    for i in range(len(m.layers)):
        states.append(run_layer(i, states[-1]))
    ref = m.norm(states[-1])
    print(f"  float32 forward: {(time.time() - t0) / len(m.layers):.1f} s per layer", flush=True)
    linears = [block_linears(layer, f"model.layers.{i}.") for i, layer in enumerate(m.layers)]
    rows = []
    for bits, gs in settings:
        upd = []
        h = h0
        for i in range(len(m.layers)):
            with Swapped(linears[i], bits, gs):
                iso = run_layer(i, states[i])
                h = run_layer(i, h)
            upd.append(rel(iso - states[i], states[i + 1] - states[i]))
        out = m.norm(h)
        lazy = GemmaEncoder(GemmaConfig.from_config(gemma_config(1))).model.layers[0]
        fb, hb = bytes_per_block(lazy, "layers.0.", bits, gs)
        rows.append(f"| q{bits} g{gs:<3} | {sum(upd) / len(upd):8.4%} | {rel(out, ref):8.4%} | {_gb(fb)} | {_gb(hb)} |")
    lazy = GemmaEncoder(GemmaConfig.from_config(gemma_config(1))).model.layers[0]
    fb, hb = bytes_per_block(lazy, "layers.0.", None, 64)
    head = ["", f"Gemma-3-12B decoder layer (3840 wide, 16 q / 8 kv heads of 256, MLP 15360), {n} tokens, "
                f"{args.layers} layers; relative error vs float32",
            "| weights  | layer update | last state | bytes/layer file | bytes/layer held |",
            "|----------|----------|----------|------------|------------|",
            f"| float    |        - |        - | {_gb(fb)} | {_gb(hb)} |"]
    return head + rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video-tokens", type=int, default=1536, help="1536: stage 1 of 768x512x121; 6144: stage 2")
    ap.add_argument("--audio-tokens", type=int, default=126)
    ap.add_argument("--text-tokens", type=int, default=1024)
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--gemma-tokens", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--groups", default="32,64,128")
    ap.add_argument("--bits", default="8,4")
    ap.add_argument("--skip", choices=("transformer", "gemma"), default=None)
    args = ap.parse_args()
    _ensure_blas()
    settings = [(int(b), int(g)) for b in args.bits.split(",") for g in args.groups.split(",")]
    print(f"LD_PRELOAD={os.environ.get('LD_PRELOAD', '')!r}")
    checks = [check_quantized_matmul(4096, 4096, b, g) for b, g in settings]
    print(f"MLX quantized_matmul vs x @ dequantize(W).T (4096 x 4096, float32): max rel diff {max(checks):.1e}")
    lines = []
    if args.skip != "transformer":
        lines += run_transformer(args, settings)
    if args.skip != "gemma":
        lines += run_gemma(args, settings)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
