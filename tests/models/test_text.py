"""Text path behaviour beyond parity: tokenizer padding and limits, Gemma key layouts and folder
loading, what is (not) read, the LTX-2.3 (V2) text path and its refused variants, batching."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten, tree_unflatten
from safetensors.numpy import save_file
from tokenizers import Tokenizer, models, pre_tokenizers

from support import v12_fixture_sets

from ltx2.models.text import (ConnectorConfig, EmbeddingsConnector, FeatureExtractorV2, GemmaConfig, GemmaConfigError,
                              GemmaTokenizer, PromptTooLongError, TextConfigError, TextEncoder,
                              load_embeddings_processor, load_gemma)
from ltx2.models.text import gemma as gemma_mod
from ltx2.models.text.embeddings import TEXT_EMBEDDINGS_KEYMAP, build_embeddings_processor, to_checkpoint, uses_v2
from ltx2.models.weights import source as source_mod
from ltx2.models.weights import CheckpointError, read_header

SEED0 = Path(__file__).parents[1] / "fixtures" / "seed0"
GEMMA_FILE = SEED0 / "gemma3_tiny.safetensors"
WORDS = "a red fox jumps over the lazy dog at night".split()


def write_tokenizer(folder: Path, *, with_config: bool = True) -> dict[str, int]:
    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3}
    for w in WORDS:
        vocab[w] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(["<pad>", "<eos>", "<bos>", "<unk>"])
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    if with_config:
        (folder / "tokenizer_config.json").write_text(json.dumps(
            {"add_bos_token": True, "add_eos_token": False, "bos_token": "<bos>", "eos_token": "<eos>",
             "pad_token": "<pad>", "unk_token": "<unk>"}))
    return vocab


def gemma_fixture() -> tuple[dict[str, np.ndarray], dict]:
    header = read_header(GEMMA_FILE)
    from safetensors.numpy import load_file
    return load_file(str(GEMMA_FILE)), json.loads(header.metadata["gemma_config"])


def gemma_inputs():
    z = np.load(SEED0 / "gemma3_tiny.npz")
    return mx.array(z["input_ids"]), mx.array(z["attention_mask"])


# --- tokenizer --------------------------------------------------------------------------------------------------------
def test_tokenizer_pads_left_with_bos_and_mask(tmp_path):
    vocab = write_tokenizer(tmp_path)
    tok = GemmaTokenizer.from_folder(tmp_path, max_length=8)
    out = tok(["  red fox jumps ", "a lazy dog"])
    ids = [vocab[w] for w in ("red", "fox", "jumps")]
    assert out.input_ids.tolist() == [[0, 0, 0, 0, 2] + ids, [0, 0, 0, 0, 2, vocab["a"], vocab["lazy"], vocab["dog"]]]
    assert out.attention_mask.tolist() == [[0, 0, 0, 0, 1, 1, 1, 1]] * 2
    assert out.lengths == (4, 4)


def test_tokenizer_defaults_without_config_add_bos(tmp_path):
    write_tokenizer(tmp_path, with_config=False)
    out = GemmaTokenizer.from_folder(tmp_path / "tokenizer.json", max_length=4)("fox")
    assert out.input_ids.tolist() == [[0, 0, 2, 6]]


def test_tokenizer_over_long_prompt_states_limit_and_count(tmp_path):
    write_tokenizer(tmp_path)
    tok = GemmaTokenizer.from_folder(tmp_path, max_length=6)
    tok("a red fox jumps over")  # 5 words + <bos> = 6: exactly fits
    with pytest.raises(PromptTooLongError) as e:
        tok("a red fox jumps over the")
    assert "7 tokens" in str(e.value) and "at most 6" in str(e.value)


# --- Gemma weights ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("prefix", ["model.language_model.", "model."])
def test_gemma_loads_other_key_layouts_identically(tmp_path, prefix):
    tensors, cfg = gemma_fixture()
    ids, mask = gemma_inputs()
    ref = load_gemma(GEMMA_FILE)(ids, mask)
    moved = {prefix + k[len("language_model.model."):]: v for k, v in tensors.items()
             if k.startswith("language_model.model.")}
    if prefix == "model.language_model.":  # newer HF exports keep the vision tower beside it
        moved.update({"model.vision_tower." + k[len("vision_tower."):]: v for k, v in tensors.items()
                      if k.startswith("vision_tower.")})
    path = tmp_path / "g.safetensors"
    save_file(moved, str(path), metadata={"gemma_config": json.dumps(cfg)})
    out = load_gemma(path)(ids, mask)
    assert len(out) == len(ref) == cfg["text_config"]["num_hidden_layers"] + 1
    for a, b in zip(out, ref):
        assert np.array_equal(np.array(a), np.array(b))


def test_gemma_folder_with_shards_and_index_never_opens_vision_shard(tmp_path):
    tensors, cfg = gemma_fixture()
    ids, mask = gemma_inputs()
    lm = sorted(k for k in tensors if k.startswith("language_model."))
    half = len(lm) // 2
    shards = {"model-00001-of-00003.safetensors": lm[:half], "model-00002-of-00003.safetensors": lm[half:]}
    for name, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, str(tmp_path / name))
    # the vision/projector shard is garbage: loading must succeed without ever opening it
    (tmp_path / "model-00003-of-00003.safetensors").write_bytes(b"not a safetensors file")
    weight_map = {k: n for n, keys in shards.items() for k in keys}
    weight_map.update({k: "model-00003-of-00003.safetensors" for k in tensors if not k.startswith("language_model.")})
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    out = load_gemma(tmp_path)(ids, mask)
    ref = load_gemma(GEMMA_FILE)(ids, mask)
    for a, b in zip(out, ref):
        assert np.array_equal(np.array(a), np.array(b))


def test_gemma_reads_only_language_model_tensors(monkeypatch):
    asked: list[str] = []
    real = source_mod.load_tensors  # every read of an official file goes through the weight source

    def spy(header, keys, dtype=mx.float32):
        asked.extend(keys)
        return real(header, keys, dtype)

    monkeypatch.setattr(source_mod, "load_tensors", spy)
    load_gemma(GEMMA_FILE)
    lm = {k for k in read_header(GEMMA_FILE).tensors if k.startswith("language_model.model.")}
    assert set(asked) == lm
    assert not [k for k in asked if "vision" in k or "multi_modal" in k]


def test_gemma_strict_loading_names_missing_tensor(tmp_path):
    tensors, cfg = gemma_fixture()
    missing = "language_model.model.layers.1.self_attn.k_norm.weight"
    save_file({k: v for k, v in tensors.items() if k != missing}, str(tmp_path / "g.safetensors"),
              metadata={"gemma_config": json.dumps(cfg)})
    with pytest.raises(CheckpointError, match=r"missing tensor layers\.1\.self_attn\.k_norm\.weight"):
        load_gemma(tmp_path / "g.safetensors")


def test_gemma_config_refuses_unsupported_option():
    _, cfg = gemma_fixture()
    cfg["text_config"]["attn_logit_softcapping"] = 50.0
    with pytest.raises(GemmaConfigError, match="attn_logit_softcapping=50.0"):
        GemmaConfig.from_config(cfg)


def test_gemma_config_layer_types_from_pattern_or_list():
    _, cfg = gemma_fixture()  # 3 layers, sliding_window_pattern 2
    assert GemmaConfig.from_config(cfg).layer_types == ("sliding_attention", "full_attention", "sliding_attention")
    cfg["text_config"]["layer_types"] = ["full_attention", "sliding_attention", "sliding_attention"]
    enc = gemma_mod.GemmaEncoder(GemmaConfig.from_config(cfg))
    ropes = [layer.self_attn.rope for layer in enc.model.layers]
    assert [r.base for r in ropes] == [1_000_000, 10_000, 10_000]
    assert ropes[0].scale == pytest.approx(1 / 8)  # linear scaling only on the global layer


# --- connectors -------------------------------------------------------------------------------------------------------
def _random_params(module, seed: int = 0) -> None:
    """Every parameter drawn at random (a header-only fixture has none to load)."""
    mx.random.seed(seed)
    flat = tree_flatten(module.parameters())
    module.update(tree_unflatten([(k, 0.3 * mx.random.normal(v.shape)) for k, v in flat]))


def test_ltx23_config_builds_the_v2_text_path_in_the_checkpoint_layout():
    # built from the header alone (config and tensor shapes)
    path = SEED0 / "connector_ltx23.safetensors"
    proc = build_embeddings_processor(source_mod.OfficialSource(path, TEXT_EMBEDDINGS_KEYMAP))
    fe = proc.feature_extractor
    assert isinstance(fe, FeatureExtractorV2) and (fe.hidden_size, fe.num_hidden_states) == (24, 4)
    assert fe.video_aggregate_embed.weight.shape == (64, 96) and fe.audio_aggregate_embed.weight.shape == (32, 96)
    for c in (proc.video_connector, proc.audio_connector):
        assert c.config.gated_attention and len(c.blocks) == 2 and c.config.num_learnable_registers == 8
    # the key map's inverse gives back exactly the file's names and shapes
    header = read_header(path)
    assert {k: tuple(v.shape) for k, v in to_checkpoint(proc).items()} == \
        {k: tuple(t.shape) for k, t in header.tensors.items()}


@pytest.mark.parametrize("edit, words", [
    (lambda t: t.pop("caption_proj_input_norm"), ["missing", "caption_proj_input_norm"]),
    (lambda t: t.update(caption_projection_second_linear=True), ["caption_projection_second_linear=True",
                                                                  "expected False"]),
])
def test_other_ltx23_text_projection_variants_are_refused_naming_the_option(edit, words):
    tcfg = dict(read_header(SEED0 / "connector_ltx23.safetensors").config()["transformer"])
    assert uses_v2(tcfg)
    edit(tcfg)
    with pytest.raises(TextConfigError) as e:
        uses_v2(tcfg)
    assert all(w in str(e.value) for w in words)


def test_v2_features_normalise_each_token_and_leave_padding_at_the_bias():
    fe = FeatureExtractorV2(8, 3, 16, 4)
    _random_params(fe)
    hs = [mx.random.normal((2, 6, 8)) for _ in range(3)]
    mask = mx.array([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 0, 1]])  # the mask decides, not the padding side
    video, audio = fe(hs, mask)
    assert video.shape == (2, 6, 16) and audio.shape == (2, 6, 4)
    for out, proj in ((video, fe.video_aggregate_embed), (audio, fe.audio_aggregate_embed)):
        pad = np.array(out)[np.array(mask) == 0]
        np.testing.assert_allclose(pad, np.broadcast_to(np.array(proj.bias), pad.shape), atol=1e-6)
    # per token and per state: scaling one state of one token changes nothing
    scaled = [h * mx.where(mx.arange(6)[None, :, None] == 3, 5.0, 1.0) if i == 1 else h for i, h in enumerate(hs)]
    video2, _ = fe(scaled, mask)
    np.testing.assert_allclose(np.array(video2), np.array(video), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="expects 3 hidden states of width 8"):
        fe(hs[:2], mask)


def test_gated_connector_with_zero_logits_is_the_plain_one():
    plain = ConnectorConfig(num_attention_heads=2, attention_head_dim=8, num_layers=2, num_learnable_registers=4,
                            max_pos=(64,), rope_type="split")
    gated = EmbeddingsConnector(replace(plain, gated_attention=True))
    ungated = EmbeddingsConnector(plain)
    _random_params(gated)
    flat = dict(tree_flatten(gated.parameters()))
    ungated.update(tree_unflatten([(k, v) for k, v in flat.items() if "to_gate_logits" not in k]))
    x, mask = mx.random.normal((1, 8, 16)), mx.array([[0, 0, 0, 1, 1, 1, 1, 1]])
    assert not np.allclose(np.array(gated(x, mask)[0]), np.array(ungated(x, mask)[0]), atol=1e-3)
    gated.update(tree_unflatten([(k, mx.zeros_like(v)) for k, v in flat.items() if "to_gate_logits" in k]))
    np.testing.assert_allclose(np.array(gated(x, mask)[0]), np.array(ungated(x, mask)[0]), atol=1e-6)


def test_v2_batch_rows_match_single_prompt_runs():
    proc = build_embeddings_processor(source_mod.OfficialSource(SEED0 / "connector_ltx23.safetensors",
                                                                TEXT_EMBEDDINGS_KEYMAP))
    _random_params(proc, 3)
    hs1 = [mx.random.normal((1, 16, 24)) for _ in range(4)]
    hs2 = [mx.random.normal((1, 16, 24)) for _ in range(4)]
    m1, m2 = mx.array([[0] * 5 + [1] * 11]), mx.array([[0] * 9 + [1] * 7])
    batch = proc([mx.concatenate([a, b]) for a, b in zip(hs1, hs2)], mx.concatenate([m1, m2]))
    assert batch.video.shape == (2, 16, 64) and batch.audio.shape == (2, 16, 32)
    for row, (hs, m) in enumerate(((hs1, m1), (hs2, m2))):
        single = proc(hs, m)
        np.testing.assert_allclose(np.array(batch.video[row]), np.array(single.video[0]), atol=1e-5)
        np.testing.assert_allclose(np.array(batch.audio[row]), np.array(single.audio[0]), atol=1e-5)


def test_ltx23_text_encoder_end_to_end_on_the_v12_fixture():
    fixtures = v12_fixture_sets()[0]  # skips (one line) where ../shared is absent
    root = fixtures / "gemma3_tiny_root"
    enc = TextEncoder.load(root, fixtures / "connector_ltx23.safetensors", max_length=128)
    ctx = enc(["a red fox", "night"])
    assert ctx.video.shape == (2, 128, 64) and ctx.audio.shape == (2, 128, 32)
    assert ctx.attention_mask.tolist() == [[1] * 128] * 2
    hs, mask = enc.hidden_states("night")
    alone = enc.contexts(hs, mask)
    np.testing.assert_allclose(np.array(ctx.video[1]), np.array(alone.video[0]), atol=1e-5)


def test_register_count_must_match_config(tmp_path):
    from safetensors.numpy import load_file
    path = SEED0 / "connector_ltx2.safetensors"
    cfg = json.loads(read_header(path).metadata["config"])
    cfg["transformer"]["connector_num_learnable_registers"] = 4  # tensors hold 8
    save_file(load_file(str(path)), str(tmp_path / "c.safetensors"), metadata={"config": json.dumps(cfg)})
    with pytest.raises(CheckpointError, match="connector_num_learnable_registers=4"):
        load_embeddings_processor(tmp_path / "c.safetensors")


def test_connector_batch_rows_match_single_prompt_runs():
    z = np.load(SEED0 / "connector_ltx2.npz")
    proc = load_embeddings_processor(SEED0 / "connector_ltx2.safetensors")
    hs1 = [z[f"hidden_state_{i}"] for i in range(4)]
    hs2 = [np.roll(h, 3, axis=1) * 0.5 for h in hs1]
    m1 = z["attention_mask"]
    m2 = np.ones_like(m1)
    m2[:, :9] = 0
    batch = proc([mx.array(np.concatenate([a, b])) for a, b in zip(hs1, hs2)], mx.array(np.concatenate([m1, m2])))
    for row, (hs, m) in enumerate(((hs1, m1), (hs2, m2))):
        single = proc([mx.array(h) for h in hs], mx.array(m))
        np.testing.assert_allclose(np.array(batch.video[row]), np.array(single.video[0]), atol=1e-5)
        np.testing.assert_allclose(np.array(batch.audio[row]), np.array(single.audio[0]), atol=1e-5)


def test_sequence_length_must_be_multiple_of_registers():
    z = np.load(SEED0 / "connector_ltx2.npz")
    proc = load_embeddings_processor(SEED0 / "connector_ltx2.safetensors")
    hs = [mx.array(z[f"hidden_state_{i}"][:, :12]) for i in range(4)]  # 12 is not a multiple of 8 registers
    with pytest.raises(ValueError, match="multiple of the connector's 8 learnable registers"):
        proc(hs, mx.ones((1, 12), dtype=mx.int32))


# --- end to end -------------------------------------------------------------------------------------------------------
def test_text_encoder_end_to_end_on_tiny_fixtures(tmp_path):
    write_tokenizer(tmp_path)
    enc = TextEncoder.load(GEMMA_FILE, SEED0 / "connector_ltx2.safetensors", tokenizer_path=tmp_path, max_length=16)
    prompts = ["a red fox jumps over the lazy dog", "night"]
    ctx = enc(prompts)
    assert ctx.video.shape == (2, 16, 24) and ctx.audio.shape == (2, 16, 24)
    assert ctx.attention_mask.tolist() == [[1] * 16] * 2  # registers fill the padding
    hs, mask = enc.hidden_states(prompts[1])
    assert len(hs) == 4 and mask.tolist() == [[0] * 14 + [1, 1]]
    alone = enc.contexts(hs, mask)
    np.testing.assert_allclose(np.array(ctx.video[1]), np.array(alone.video[0]), atol=1e-5)
