"""text-encode: prompt (and negative prompt) -> text.zarr (video and audio contexts, token mask).

Gemma runs first and is freed before the small text projection and connectors are loaded, so the
stage never holds both.
"""

from __future__ import annotations

import gc

import mlx.core as mx

from .base import StageContext, StageSpec
from .contract import BadInput, MemoryPlan
from .memory import COMPUTE_BYTES

SPEC = StageSpec("text-encode", inputs=(), output_kind="text", weights=("gemma", "checkpoint"),
                 budget_fix="raise memory_budget (the Gemma-3 text encoder is the largest part)")

TEXT_PREFIXES = ("text_embedding_projection.", "model.diffusion_model.video_embeddings_connector.",
                 "model.diffusion_model.audio_embeddings_connector.")


def resolve_params(_inputs, p: dict) -> dict:
    prompt = p.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise BadInput("text-encode: no prompt; give one with --set prompt='...'")
    neg = p.get("negative_prompt")
    if neg is not None and not isinstance(neg, str):
        raise BadInput(f"text-encode: negative_prompt must be text, got {neg!r}")
    from .denoising import canonical_weights_mode

    # Gemma's (and the connectors') precision / streaming, chosen by the planner; absent: float32, resident
    return {"prompt": prompt, "negative_prompt": neg,
            "weights_mode": canonical_weights_mode("text-encode", p.get("weights_mode"))}


def estimate(ctx: StageContext) -> MemoryPlan:
    """Gemma phase (its layers under the WeightsMode, the embedding read by rows) and connector phase
    (the text projection and connectors, matrices in bf16 unless the mode is float32) run one after the
    other; the hidden states of every layer live through both."""
    from ltx2.models.text import GemmaConfig
    from ltx2.models.text.gemma import weight_plan

    from .denoising import weights_mode
    from .memory import converted_part, gemma_held, header_tensors

    mode = weights_mode(ctx)
    cfg, _, _ = weight_plan(ctx.weights["gemma"])
    g = GemmaConfig.from_config(cfg)
    held = gemma_held(ctx.weights["gemma"], mode)
    prompts = 2 if ctx.params["negative_prompt"] else 1
    tokens = 1024  # the official padded prompt length
    # every layer's hidden states for each prompt at the padded length (real: 1024 x 3840 x 49), and a
    # stacked copy the feature extractor makes of them
    states = 2 * prompts * tokens * g.hidden_size * (g.num_hidden_layers + 1) * COMPUTE_BYTES
    # inside one layer: the MLP's gate / up / product and the attention scores (with softmax)
    layer = prompts * (3 * tokens * g.intermediate_size + 2 * g.num_attention_heads * tokens * tokens) * COMPUTE_BYTES
    # quantised: building a layer holds it in float32 once; on CPU each matmul dequantises one matrix
    transient = held.block_float32 + 4 * held.largest_matrix_f32 if mode.quantized else 0
    gemma = held.total(mode.streaming) + layer + transient
    conv = converted_part(ctx.weights["checkpoint"], "text_embeddings")
    if conv is not None:  # a converted text file (`ltx2 convert`)
        text = conv.nbytes("text_embeddings", mx.float32 if mode.precision == "float32" else mx.bfloat16)
    else:
        text = sum(shape_bytes(shape, mode) for shape in header_tensors(ctx.weights["checkpoint"],
                                                                           prefixes=TEXT_PREFIXES).values())
    return MemoryPlan(max(gemma, text), states)


def shape_bytes(shape_stored: tuple, mode) -> int:
    """A text-projection / connector tensor as held: matrices in bf16 unless the mode is float32."""
    shape, _ = shape_stored
    n = 1
    for d in shape:
        n *= d
    return n * (2 if mode.precision != "float32" and len(shape) == 2 else COMPUTE_BYTES)


def hold_embeddings(processor, mode):
    """Matrices (Linear weights) in bf16 unless the mode is float32, everything else float32."""
    from mlx.utils import tree_map_with_path

    def cast(path: str, v):
        if not mx.issubdtype(v.dtype, mx.floating):  # packed quantised weights (a converted file)
            return v
        keep_bf16 = mode.precision != "float32" and path.endswith(".weight") and v.ndim == 2
        return v.astype(mx.bfloat16 if keep_bf16 else mx.float32)

    processor.update(tree_map_with_path(cast, processor.parameters()))
    mx.eval(processor.parameters())
    return processor


def run(ctx: StageContext) -> None:
    from ltx2.models.text import TextEncoder, load_embeddings_processor
    from ltx2.models.text.streaming import load_gemma_mode
    from ltx2.models.text.tokenizer import GemmaTokenizer

    from .denoising import emit_stream_stats, weights_mode

    mode = weights_mode(ctx)
    prompts = [ctx.params["prompt"]]
    if ctx.params["negative_prompt"]:
        prompts.append(ctx.params["negative_prompt"])
    ctx.progress.emit("loading", what="gemma", weights_mode=mode.params())
    gemma_path = ctx.weights["gemma"]
    tokenizer = GemmaTokenizer.from_folder(gemma_path if gemma_path.is_dir() else gemma_path.parent)
    enc = TextEncoder(tokenizer, load_gemma_mode(gemma_path, mode), None)
    ctx.progress.step(0, 2)
    hidden, mask = enc.hidden_states(prompts)
    mx.eval(hidden, mask)
    if mode.streaming:
        emit_stream_stats(ctx, enc.gemma.stats, 1)
    enc.gemma = None  # free Gemma before the connectors come in
    gc.collect()
    ctx.progress.step(1, 2)
    # read as stored (bf16 in the official file), then held as the mode says: never all in float32 at once
    enc.embeddings = hold_embeddings(load_embeddings_processor(ctx.weights["checkpoint"], None), mode)
    tc = enc.contexts(hidden, mask)
    mx.eval(tc.video, tc.audio, tc.attention_mask)
    w = ctx.writer()
    w.write_array("video_context", tc.video[:1])
    w.write_array("audio_context", tc.audio[:1])
    w.write_array("attention_mask", tc.attention_mask[:1].astype(mx.int32))
    if len(prompts) == 2:
        w.write_array("negative_video_context", tc.video[1:])
        w.write_array("negative_audio_context", tc.audio[1:])
        w.write_array("negative_attention_mask", tc.attention_mask[1:].astype(mx.int32))
    w.finalize(facts={"sequence_length": int(tc.video.shape[1]), "has_negative": len(prompts) == 2})
    ctx.progress.step(2, 2)
