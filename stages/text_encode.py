"""text-encode: prompt (and negative prompt) -> text.zarr (video and audio contexts, token mask).

Gemma runs first and is freed before the small text projection and connectors are loaded, so the
stage never holds both.
"""

from __future__ import annotations

import gc

import mlx.core as mx

from .base import StageContext, StageSpec
from .contract import BadInput, MemoryPlan
from .memory import COMPUTE_BYTES, weight_bytes

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
    return {"prompt": prompt, "negative_prompt": neg}


def estimate(ctx: StageContext) -> MemoryPlan:
    from ltx2.models.text import GemmaConfig
    from ltx2.models.text.gemma import weight_plan
    from ltx2.models.weights import read_header

    cfg, _, per_file = weight_plan(ctx.weights["gemma"])
    gemma = 0
    for file, keys in per_file.items():
        tensors = read_header(file).tensors
        for k in keys:
            n = 1
            for d in tensors[k].shape:
                n *= d
            gemma += n * COMPUTE_BYTES
    text = weight_bytes(ctx.weights["checkpoint"], TEXT_PREFIXES)
    # every layer's hidden states for each prompt at the padded length (real: 1024 x 3840 x 49)
    g = GemmaConfig.from_config(cfg)
    prompts = 2 if ctx.params["negative_prompt"] else 1
    acts = 2 * prompts * 1024 * g.hidden_size * (g.num_hidden_layers + 1) * COMPUTE_BYTES
    return MemoryPlan(max(gemma, text), acts)


def run(ctx: StageContext) -> None:
    from ltx2.models.text import TextEncoder, load_embeddings_processor

    prompts = [ctx.params["prompt"]]
    if ctx.params["negative_prompt"]:
        prompts.append(ctx.params["negative_prompt"])
    ctx.progress.emit("loading", what="gemma")
    enc = TextEncoder.load(ctx.weights["gemma"], None)
    ctx.progress.step(0, 2)
    hidden, mask = enc.hidden_states(prompts)
    mx.eval(hidden, mask)
    enc.gemma = None  # free Gemma before the connectors come in
    gc.collect()
    ctx.progress.step(1, 2)
    enc.embeddings = load_embeddings_processor(ctx.weights["checkpoint"])
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
