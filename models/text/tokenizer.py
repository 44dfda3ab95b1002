"""The Gemma tokenizer as LTX-2 uses it, on the `tokenizers` library alone (no transformers, no hub).

What the official ``LTXVGemmaTokenizer`` does, through transformers' ``GemmaTokenizerFast``:
- the prompt is ``strip()``-ed, then encoded with the special tokens the tokenizer config asks for
  (Gemma: ``<bos>`` first, no ``<eos>``; transformers rebuilds that template from
  tokenizer_config.json's ``add_bos_token`` / ``add_eos_token`` rather than trusting tokenizer.json);
- it is padded on the LEFT with the pad token (``<pad>``; the eos token if there is none) to a fixed
  ``max_length`` (1024 in the LTX-2 pipelines), with attention mask 0 on the padding.
The official code silently truncates a longer prompt; we refuse it instead, stating both numbers,
because a cut-off prompt quietly renders something else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
from tokenizers import Tokenizer
from tokenizers.processors import TemplateProcessing

from ltx2.spec.errors import BadInputError

DEFAULT_MAX_LENGTH = 1024  # what ltx_core's Gemma root loader passes to LTXVGemmaTokenizer


class PromptTooLongError(BadInputError):
    """A prompt has more tokens than the text encoder's fixed length."""


def _token_text(value) -> str | None:
    # tokenizer_config.json stores special tokens either as strings or as AddedToken dicts
    if isinstance(value, dict):
        return value.get("content")
    return value


@dataclass(frozen=True)
class TokenizedPrompts:
    input_ids: mx.array  # [B, max_length] int32
    attention_mask: mx.array  # [B, max_length] int32, 0 on the left padding
    lengths: tuple[int, ...]  # real token count per prompt


class GemmaTokenizer:
    def __init__(self, tokenizer: Tokenizer, *, max_length: int = DEFAULT_MAX_LENGTH, add_bos: bool = True,
                 add_eos: bool = False, bos_token: str = "<bos>", eos_token: str = "<eos>",
                 pad_token: str | None = "<pad>"):
        self.max_length = int(max_length)
        tok = tokenizer
        tok.no_padding()
        tok.no_truncation()
        specials = []
        for flag, name, what in ((add_bos, bos_token, "bos"), (add_eos, eos_token, "eos")):
            if flag:
                tid = tok.token_to_id(name)
                if tid is None:
                    raise ValueError(f"tokenizer: add_{what}_token is set but {what} token {name!r} is not in the vocabulary")
                specials.append((name, tid))
        single = " ".join(([f"{bos_token}:0"] if add_bos else []) + ["$A:0"] + ([f"{eos_token}:0"] if add_eos else []))
        tok.post_processor = TemplateProcessing(single=single, special_tokens=specials)
        self.tokenizer = tok
        pad_id = tok.token_to_id(pad_token) if pad_token else None
        if pad_id is None:  # as LTXVGemmaTokenizer: no pad token -> pad with eos
            pad_id = tok.token_to_id(eos_token)
        if pad_id is None:
            raise ValueError(f"tokenizer: neither pad token {pad_token!r} nor eos token {eos_token!r} is in the vocabulary")
        self.pad_id = pad_id

    @classmethod
    def from_folder(cls, path: str | Path, max_length: int = DEFAULT_MAX_LENGTH) -> "GemmaTokenizer":
        """From a Gemma folder (tokenizer.json, optional tokenizer_config.json / special_tokens_map.json)
        or a tokenizer.json path."""
        path = Path(path)
        folder = path if path.is_dir() else path.parent
        tj = path / "tokenizer.json" if path.is_dir() else path
        if not tj.is_file():
            raise FileNotFoundError(f"{tj}: no tokenizer.json (the Gemma folder must hold the fast tokenizer file)")
        cfg: dict = {}
        for name in ("special_tokens_map.json", "tokenizer_config.json"):  # the latter wins, as in transformers
            f = folder / name
            if f.is_file():
                cfg.update({k: v for k, v in json.loads(f.read_text()).items() if v is not None})
        return cls(Tokenizer.from_file(str(tj)), max_length=max_length,
                   add_bos=bool(cfg.get("add_bos_token", True)), add_eos=bool(cfg.get("add_eos_token", False)),
                   bos_token=_token_text(cfg.get("bos_token")) or "<bos>",
                   eos_token=_token_text(cfg.get("eos_token")) or "<eos>",
                   pad_token=_token_text(cfg.get("pad_token")) or "<pad>")

    def token_ids(self, prompt: str, field: str = "prompt") -> list[int]:
        """The prompt's ids with special tokens, unpadded; too long is an error naming ``field``."""
        ids = self.tokenizer.encode(prompt.strip()).ids
        if len(ids) > self.max_length:
            shown = prompt if len(prompt) <= 60 else prompt[:57] + "..."
            raise PromptTooLongError(f"{field}: {shown!r} ({len(prompt)} characters) is {len(ids)} tokens long "
                                     f"(special tokens included) but the text encoder takes at most "
                                     f"{self.max_length}; shorten it by at least {len(ids) - self.max_length} tokens")
        return ids

    def __call__(self, prompts: str | list[str]) -> TokenizedPrompts:
        """Left-padded ids and attention mask, [B, max_length] each."""
        if isinstance(prompts, str):
            prompts = [prompts]
        rows, masks, lengths = [], [], []
        for p in prompts:
            ids = self.token_ids(p)
            pad = self.max_length - len(ids)
            rows.append([self.pad_id] * pad + ids)
            masks.append([0] * pad + [1] * len(ids))
            lengths.append(len(ids))
        return TokenizedPrompts(mx.array(rows, dtype=mx.int32), mx.array(masks, dtype=mx.int32), tuple(lengths))
