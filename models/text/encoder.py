"""Prompt(s) -> (video context, audio context, mask): tokenizer, Gemma-3, feature extractor, connectors.

The two halves read different files (the Gemma folder; the LTX-2 checkpoint's text projection and
connectors), so a memory-tight stage can run ``hidden_states`` with only Gemma loaded, free it, and
then run ``contexts`` with only the small embeddings processor loaded.
"""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx

from .embeddings import EmbeddingsProcessor, TextContext, load_embeddings_processor
from .gemma import GemmaEncoder, load_gemma
from .tokenizer import DEFAULT_MAX_LENGTH, GemmaTokenizer


class TextEncoder:
    def __init__(self, tokenizer: GemmaTokenizer, gemma: GemmaEncoder | None, embeddings: EmbeddingsProcessor | None):
        self.tokenizer = tokenizer
        self.gemma = gemma
        self.embeddings = embeddings

    @classmethod
    def load(cls, gemma_path: str | Path, checkpoint_path: str | Path | None, *,
             tokenizer_path: str | Path | None = None, max_length: int = DEFAULT_MAX_LENGTH,
             dtype: mx.Dtype = mx.float32) -> "TextEncoder":
        """``gemma_path``: the Gemma folder (or a single-file Gemma); its tokenizer.json is used unless
        ``tokenizer_path`` says otherwise. ``checkpoint_path``: the LTX-2 single-file checkpoint (None: load
        the embeddings processor later)."""
        gemma_path = Path(gemma_path)
        tok_src = Path(tokenizer_path) if tokenizer_path is not None else (
            gemma_path if gemma_path.is_dir() else gemma_path.parent)
        tokenizer = GemmaTokenizer.from_folder(tok_src, max_length=max_length)
        gemma = load_gemma(gemma_path, dtype)
        emb = load_embeddings_processor(checkpoint_path, dtype) if checkpoint_path is not None else None
        return cls(tokenizer, gemma, emb)

    def hidden_states(self, prompts: str | list[str]) -> tuple[list[mx.array], mx.array]:
        """(all Gemma hidden states [B, T, hidden] x (layers + 1), attention mask [B, T])."""
        if self.gemma is None:
            raise RuntimeError("TextEncoder: Gemma is not loaded")
        tok = self.tokenizer(prompts)
        return self.gemma(tok.input_ids, tok.attention_mask), tok.attention_mask

    def contexts(self, hidden_states: list[mx.array], attention_mask: mx.array) -> TextContext:
        if self.embeddings is None:
            raise RuntimeError("TextEncoder: the text projection and connectors are not loaded")
        return self.embeddings(hidden_states, attention_mask, padding_side="left")

    def __call__(self, prompts: str | list[str]) -> TextContext:
        hs, mask = self.hidden_states(prompts)
        return self.contexts(hs, mask)
