"""text-encode: prompt (and negative prompt) -> text.zarr (video and audio contexts, token mask).

Gemma runs first and is freed before the small text projection and connectors are loaded, so the
stage never holds both.
"""

from __future__ import annotations

import gc
from pathlib import Path

import mlx.core as mx

from mlx.utils import tree_map_with_path
from pydantic import Field, field_validator

from ltx2.models.precision import cast_floating
from ltx2.models.text import GemmaConfig, TextEncoder, load_embeddings_processor
from ltx2.models.text.embeddings import context_widths
from ltx2.models.text.gemma import weight_plan
from ltx2.models.text.streaming import load_gemma_mode
from ltx2.models.text.tokenizer import GemmaTokenizer
from ltx2.spec.layout import CHECKPOINT_PARTS
from ltx2.spec.precision import Compute

from .contract import MemoryPlan
from .denoising import emit_stream_stats
from .memory import (COMPUTE_BYTES, cached_header, compute_bytes, compute_of, converted_part, gemma_held,
                     header_tensors, weights_mode, weights_mode_choices)
from .params import DEFAULT_WEIGHTS_MODE, WeightsModeParam, compute_field
from .registry import PredictedOutput, StageContext, StageDef, StageParams

# The official padded prompt length: every prompt becomes this many tokens.
SEQUENCE_LENGTH = 1024

TEXT_PREFIXES = CHECKPOINT_PARTS["text_embeddings"]


class Params(StageParams):
    prompt: str = Field(description="the prompt (Gemma-3 reads at most 1024 tokens)")
    negative_prompt: str | None = Field(None, description="the negative prompt (guided pipelines); none: no CFG")
    weights_mode: WeightsModeParam = Field(DEFAULT_WEIGHTS_MODE, description="Gemma's precision and streaming "
                                           "(the planner picks it): {precision: float32|bfloat16|q8|q4, streaming}")
    compute: Compute = compute_field()

    @field_validator("prompt")
    @classmethod
    def _some_text(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("is empty; give one with --set prompt='...'")
        return v


def check(ctx: StageContext) -> None:
    """Refuse a prompt longer than Gemma reads when the job is planned, not after the stages before it ran
    (the official code cuts it silently, rendering something else)."""
    gemma: Path = ctx.weights["gemma"]
    tokenizer = GemmaTokenizer.from_folder(gemma if gemma.is_dir() else gemma.parent)  # as run() reads it
    for field in ("prompt", "negative_prompt"):
        text = getattr(ctx.params, field)
        if text:
            tokenizer.token_ids(text, field)


def estimate(ctx: StageContext) -> MemoryPlan:
    """Gemma phase (its layers under the WeightsMode, the embedding read by rows) and connector phase
    (the text projection and connectors, matrices in bf16 unless the mode is float32, everything at the compute
    width when that is narrower) run one after the other; the hidden states of every layer live through both, at
    the compute width."""
    mode = weights_mode(ctx)
    cfg, _, _ = weight_plan(ctx.weights["gemma"])
    g = GemmaConfig.from_config(cfg)
    held = gemma_held(ctx.weights["gemma"], mode, compute_bytes(ctx))
    prompts = 2 if ctx.params.negative_prompt else 1
    tokens = SEQUENCE_LENGTH
    b = compute_bytes(ctx)
    # every layer's hidden states for each prompt at the padded length (real: 1024 x 3840 x 49), and a
    # stacked copy the feature extractor makes of them
    states = 2 * prompts * tokens * g.hidden_size * (g.num_hidden_layers + 1) * b
    # inside one layer: the MLP's gate / up / product and the attention scores (with softmax)
    layer = prompts * (3 * tokens * g.intermediate_size + 2 * g.num_attention_heads * tokens * tokens) * b
    # quantised: building a layer holds it in float32 once; on CPU each matmul dequantises one matrix
    transient = held.block_float32 + 4 * held.largest_matrix_f32 if mode.quantized else 0
    gemma = held.total(mode.streaming) + layer + transient
    conv = converted_part(ctx.weights["checkpoint"], "text_embeddings")
    if conv is not None:  # a converted text file (`ltx2 convert`)
        dtype = compute_of(ctx) if b < COMPUTE_BYTES else mx.float32 if mode.precision == "float32" else mx.bfloat16
        text = conv.nbytes("text_embeddings", dtype)
    else:
        text = sum(shape_bytes(shape, mode, b) for shape in header_tensors(ctx.weights["checkpoint"],
                                                                              prefixes=TEXT_PREFIXES).values())
    return MemoryPlan(max(gemma, text), states)


def shape_bytes(shape_stored: tuple, mode, itemsize: int = COMPUTE_BYTES) -> int:
    """A text-projection / connector tensor as held: matrices in bf16 unless the mode is float32; everything at
    the compute width (``itemsize``) when that is narrower."""
    shape, _ = shape_stored
    n = 1
    for d in shape:
        n *= d
    if itemsize < COMPUTE_BYTES:
        return n * itemsize
    return n * (2 if mode.precision != "float32" and len(shape) == 2 else COMPUTE_BYTES)


def hold_embeddings(processor, mode):
    """Matrices (Linear weights) in bf16 unless the mode is float32, everything else float32."""
    def cast(path: str, v):
        if not mx.issubdtype(v.dtype, mx.floating):  # packed quantised weights (a converted file)
            return v
        keep_bf16 = mode.precision != "float32" and path.endswith(".weight") and v.ndim == 2
        return v.astype(mx.bfloat16 if keep_bf16 else mx.float32)

    processor.update(tree_map_with_path(cast, processor.parameters()))
    mx.eval(processor.parameters())
    return processor


def run(ctx: StageContext) -> None:
    mode = weights_mode(ctx)
    prompts = [ctx.params.prompt]
    if ctx.params.negative_prompt:
        prompts.append(ctx.params.negative_prompt)
    ctx.progress.emit("loading", what="gemma", weights_mode=mode.params())
    gemma_path = ctx.weights["gemma"]
    tokenizer = GemmaTokenizer.from_folder(gemma_path if gemma_path.is_dir() else gemma_path.parent)
    dtype = compute_of(ctx)
    enc = TextEncoder(tokenizer, load_gemma_mode(gemma_path, mode, dtype), None)
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
    if dtype != mx.float32:
        cast_floating(enc.embeddings, dtype)
    tc = enc.contexts(hidden, mask)
    video, audio = tc.video.astype(mx.float32), tc.audio.astype(mx.float32)  # the artifact holds float32
    mx.eval(video, audio, tc.attention_mask)
    w = ctx.writer()
    w.write_array("video_context", video[:1])
    w.write_array("audio_context", audio[:1])
    w.write_array("attention_mask", tc.attention_mask[:1].astype(mx.int32))
    if len(prompts) == 2:
        w.write_array("negative_video_context", video[1:])
        w.write_array("negative_audio_context", audio[1:])
        w.write_array("negative_attention_mask", tc.attention_mask[1:].astype(mx.int32))
    w.finalize(facts={"sequence_length": int(tc.video.shape[1]), "has_negative": len(prompts) == 2})
    ctx.progress.step(2, 2)


def predict_text(ctx: StageContext) -> PredictedOutput:
    t = cached_header(ctx.weights["checkpoint"]).config().get("transformer", {})
    # the video connector's width: Gemma's 3840 in LTX-2.0, the transformer's 4096 in LTX-2.3
    return PredictedOutput({"video_context": (1, SEQUENCE_LENGTH, context_widths(t)[0])},
                           {"sequence_length": SEQUENCE_LENGTH, "has_negative": bool(ctx.params.negative_prompt)})


STAGE = StageDef(
    name="text-encode", version=1, summary="prompt (and negative prompt) -> video and audio text contexts",
    inputs={}, params=Params, output_kind="text", output_name="text.zarr",
    weights={"gemma": None, "checkpoint": "text_embeddings"},
    check=check, estimate=estimate, run=run, choices=lambda ctx: weights_mode_choices(ctx, "gemma"),
    streams="gemma",
    predict=predict_text,
    budget_fix="raise memory_budget (the Gemma-3 text encoder is the largest part)",
)
