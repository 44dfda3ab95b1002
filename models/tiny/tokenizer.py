"""A small Gemma-style tokenizer for the tiny model, built with the `tokenizers` library.

Like Gemma's: a BPE model whose words start with "▁" (the space marker), byte fallback
(``<0x00>`` .. ``<0xFF>``) so any text tokenizes without ``<unk>``, Gemma's special tokens at their
usual low ids (``<pad>`` 0, ``<eos>`` 1, ``<bos>`` 2, ``<unk>`` 3) and a ``<bos>`` template. The
vocabulary is every printable ASCII character plus merges learned here, deterministically, from a
short fixed English text: a prompt is a few tokens per word, well under the 1024-token length.
"""

from __future__ import annotations

from collections import Counter

from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers
from tokenizers.models import BPE
from tokenizers.processors import TemplateProcessing

SPACE = "\u2581"  # ▁
SPECIAL = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>",
           "<start_of_image>", "<end_of_image>", "<image_soft_token>")
NUM_MERGES = 160

_CORPUS = (
    "a red fox trots through fresh snow at dawn, its breath steaming in the cold air. birdsong and the "
    "crunching of snow under its paws. the camera follows the animal as it moves between the trees of a "
    "quiet forest; soft light, gentle wind, distant water and the sound of a city street with people "
    "talking, music playing, a dog barking and a car passing by. a woman smiles and speaks to the man "
    "standing next to her while the waves of the ocean roll onto the sandy beach under a blue sky."
)


def _learn_merges(text: str, n: int) -> list[tuple[str, str]]:
    """Classic BPE on ``text``: repeatedly merge the most frequent adjacent pair (ties: the smallest
    pair in string order), so the result depends on nothing but the inputs."""
    words = Counter(SPACE + w for w in text.split())
    seqs = {w: list(w) for w in words}
    merges: list[tuple[str, str]] = []
    for _ in range(n):
        pairs: Counter = Counter()
        for w, count in words.items():
            s = seqs[w]
            for a, b in zip(s, s[1:]):
                pairs[(a, b)] += count
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        if pairs[best] < 2:
            break
        merges.append(best)
        for w in seqs:
            s, out, i = seqs[w], [], 0
            while i < len(s):
                if i + 1 < len(s) and (s[i], s[i + 1]) == best:
                    out.append(s[i] + s[i + 1])
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            seqs[w] = out
    return merges


def build_tokenizer() -> Tokenizer:
    vocab: dict[str, int] = {}
    for tok in SPECIAL:
        vocab[tok] = len(vocab)
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for ch in [SPACE] + [chr(c) for c in range(0x21, 0x7F)]:
        vocab[ch] = len(vocab)
    merges = _learn_merges(_CORPUS, NUM_MERGES)
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    tok = Tokenizer(BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    # " the fox" -> "▁the", "▁fox": each word carries its leading space marker, as in Gemma
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="never", split=True)
    tok.decoder = decoders.Sequence([decoders.Metaspace(replacement=SPACE, prepend_scheme="never"),
                                     decoders.ByteFallback(), decoders.Fuse()])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL])
    tok.post_processor = TemplateProcessing(single="<bos> $A", pair="<bos> $A $B",
                                            special_tokens=[("<bos>", vocab["<bos>"])])
    return tok


def tokenizer_config() -> dict:
    """tokenizer_config.json as transformers writes it for Gemma (the keys our tokenizer reads)."""
    return {"add_bos_token": True, "add_eos_token": False, "bos_token": "<bos>", "eos_token": "<eos>",
            "pad_token": "<pad>", "unk_token": "<unk>", "padding_side": "left", "model_max_length": 1024,
            "clean_up_tokenization_spaces": False, "tokenizer_class": "GemmaTokenizer"}


def special_tokens_map() -> dict:
    return {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>"}
