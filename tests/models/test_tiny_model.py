"""The embedded tiny model: deterministic generation in the official layouts, loaded by the real loaders.

Also the inverse key maps (``to_checkpoint``, from each network's KeyMap) of every network: loading what they
write reproduces the module exactly, and on the official-made fixtures they give back the
official key names. And LoRA fusion (``W += strength * B @ A``).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from ltx2.models.tiny import MANIFEST, ensure_tiny_model, is_current
from ltx2.models.tiny import _install
from ltx2.models.tiny import configs
from ltx2.models.tiny.configs import MODEL_VERSION, TINY_VERSION
from ltx2.models.tiny.generator import generate
from ltx2.models.tiny.weights import write_safetensors
from ltx2.models.weights import CheckpointError, load_tensors, read_header
from ltx2.models.weights.lora import fuse_lora
from ltx2.orchestrator.job import TINY_FILES, official_stg_blocks, official_steps

FIXTURES = Path(__file__).parents[1] / "fixtures" / "seed0"
PROMPT = "A red fox trots through fresh snow at dawn, its breath steaming; birdsong and crunching snow."
# examples/tiny.yaml: two-stage, 192x128 (stage 1 at 96x64), 9 frames at 24 fps
WIDTH, HEIGHT, FRAMES, FPS = 192, 128, 9, 24.0
TIMES: dict[str, float] = {}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    t0 = time.perf_counter()
    files = ensure_tiny_model(tmp_path_factory.mktemp("tiny") / "model")
    TIMES["generate"] = time.perf_counter() - t0
    return files


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _params(module) -> dict[str, mx.array]:
    return dict(tree_flatten(module.parameters()))


def _assert_same_params(a, b) -> None:
    pa, pb = _params(a), _params(b)
    assert sorted(pa) == sorted(pb)
    for k in pa:
        assert pa[k].shape == pb[k].shape and pa[k].dtype == pb[k].dtype, k
        assert mx.array_equal(pa[k], pb[k]).item(), k


def _write_f32(path: Path, tensors: dict[str, mx.array], config: dict | None) -> Path:
    meta = {"config": json.dumps(config)} if config is not None else {}
    write_safetensors(path, {k: np.array(v.astype(mx.float32)) for k, v in tensors.items()}, meta, dtype="F32")
    return path


def _finite(x: mx.array) -> bool:
    return bool(mx.all(mx.isfinite(x)).item())


# ============================================================================ generation
def test_generation_is_deterministic_and_complete(tiny, tmp_path):
    root = tiny["checkpoint"].parent
    assert set(tiny) == set(TINY_FILES) and all(p.exists() for p in tiny.values())
    again = tmp_path / "again"
    again.mkdir()
    generate(again, TINY_FILES)
    first = {k: v for k, v in _digests(root).items() if k != MANIFEST}
    assert first == _digests(again)
    assert {"ltx2-tiny.safetensors", "ltx2-tiny-spatial-upscaler-x2.safetensors",
            "ltx2-tiny-temporal-upscaler-x2.safetensors", "ltx2-tiny-distilled-lora.safetensors",
            "gemma/config.json", "gemma/model.safetensors.index.json", "gemma/tokenizer.json",
            "gemma/tokenizer_config.json", "gemma/model-00001-of-00002.safetensors"} <= set(first)


# The weight files' bytes, pinned: they are made with correctly rounded IEEE arithmetic only, so they are the
# same on every machine. If this fails, the generated model changed (a config, an init rule, a network's
# parameters): bump TINY_VERSION in models/tiny/configs.py, so folders made by the old code are regenerated,
# and update these digests.
PINNED = {
    "ltx2-tiny.safetensors": "b7bcc2f63f55c361",
    "ltx2-tiny-spatial-upscaler-x2.safetensors": "ed03df34a9b23547",
    "ltx2-tiny-temporal-upscaler-x2.safetensors": "1f4436537f643e3b",
    "ltx2-tiny-distilled-lora.safetensors": "329189097e65c3b2",
    "gemma/model-00001-of-00002.safetensors": "d4f7a09578015aab",
    "gemma/model-00002-of-00002.safetensors": "4b02d46ccbb2efe3",
}


def test_weights_are_the_pinned_bytes_of_this_version(tiny):
    got = {k: v[:16] for k, v in _digests(tiny["checkpoint"].parent).items() if k in PINNED}
    assert (TINY_VERSION, got) == ("1", PINNED), "the tiny model changed: bump TINY_VERSION and update PINNED"


def test_second_call_reuses_the_folder(tiny):
    root = tiny["checkpoint"].parent
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    t0 = time.perf_counter()
    assert ensure_tiny_model(root) == tiny
    TIMES["reuse"] = time.perf_counter() - t0
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before


def test_stale_or_incomplete_folder_is_regenerated(tiny, tmp_path):
    root = tmp_path / "model"
    root.mkdir()
    (root / MANIFEST).write_text(json.dumps({"version": "0", "files": {"x": 1}}))
    (root / "x").write_text("y")
    assert not is_current(root)
    files = ensure_tiny_model(root)
    assert is_current(root) and not (root / "x").exists()
    assert _digests(root) == _digests(tiny["checkpoint"].parent)
    files["distilled_lora"].write_bytes(b"truncated")  # a damaged file (size differs) is noticed
    assert not is_current(root)
    ensure_tiny_model(root)
    assert is_current(root)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial or stale folder left


def test_a_foreign_folder_is_never_replaced(tmp_path):
    root = tmp_path / "mine"
    root.mkdir()
    (root / "holiday.mp4").write_text("precious")
    with pytest.raises(FileExistsError, match="does not hold a tiny model"):
        ensure_tiny_model(root)
    assert (root / "holiday.mp4").read_text() == "precious"
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]  # the partial copy is cleaned up


def test_a_racing_generator_discards_its_copy(tiny, tmp_path):
    root = tiny["checkpoint"].parent
    before = _digests(root)
    loser = tmp_path / ".model.partial-x"
    loser.mkdir()
    (loser / "junk").write_text("from the slower process")
    _install(loser, root)  # another process finished first: its current folder stays
    assert not loser.exists() and _digests(root) == before


def test_checkpoint_metadata_and_component_consistency(tiny):
    h = read_header(tiny["checkpoint"])
    assert h.metadata["model_version"] == MODEL_VERSION and h.metadata["ltx2_tiny_version"] == TINY_VERSION
    cfg = h.config()
    assert set(cfg) == {"transformer", "vae", "audio_vae", "vocoder"}
    t, vae = cfg["transformer"], cfg["vae"]
    dd = cfg["audio_vae"]["model"]["params"]["ddconfig"]
    assert t["in_channels"] == t["out_channels"] == vae["latent_channels"]
    assert t["audio_in_channels"] == t["audio_out_channels"] == dd["z_channels"] * dd["mel_bins"] // 4 == dd["ch"]
    assert dd["mel_bins"] == 64  # what the vocoder reads (stereo 2 x 64 input channels)
    assert t["caption_channels"] == t["connector_num_attention_heads"] * t["connector_attention_head_dim"]
    gemma = json.loads((tiny["gemma"] / "config.json").read_text())
    assert gemma["text_config"]["hidden_size"] == t["caption_channels"]
    assert json.loads(read_header(tiny["spatial_upsampler"]).metadata["config"])["in_channels"] == vae["latent_channels"]
    assert 1024 % t["connector_num_learnable_registers"] == 0
    # every tensor is bf16 as in the official release, under the official prefixes only
    assert {i.dtype for i in h.tensors.values()} == {"BF16"}
    prefixes = {"model.diffusion_model.", "text_embedding_projection.", "vae.encoder.", "vae.decoder.",
                "vae.per_channel_statistics.", "audio_vae.encoder.", "audio_vae.decoder.",
                "audio_vae.per_channel_statistics.", "vocoder."}
    assert all(k.startswith(tuple(prefixes)) for k in h.tensors)
    assert {p for p in prefixes if any(k.startswith(p) for k in h.tensors)} == prefixes
    # the pipeline's checkpoint-dependent defaults resolve for it
    assert official_steps(MODEL_VERSION) == 40
    assert official_stg_blocks(MODEL_VERSION, t["num_layers"]) == [t["num_layers"] - 1]


def _fixture_keys(name: str, keep=lambda k: True) -> dict[str, tuple]:
    h = read_header(FIXTURES / f"{name}.safetensors")
    return {k: h.tensors[k].shape for k in h.tensors if keep(k)}


def test_key_names_match_the_official_fixtures(tiny):
    """Same structure as the oracle's fixtures (made by the official code): the same key names."""
    ck = read_header(tiny["checkpoint"]).tensors
    conn = ("model.diffusion_model.video_embeddings_connector.", "model.diffusion_model.audio_embeddings_connector.")
    ours = {k for k in ck if k.startswith("model.diffusion_model.") and not k.startswith(conn)}
    assert ours == set(_fixture_keys("transformer_ltx2", lambda k: not k.startswith(conn)))
    ours = {k for k in ck if k.startswith(conn + ("text_embedding_projection.",))}
    assert ours == set(_fixture_keys("connector_ltx2"))
    assert {k for k in ck if k.startswith("audio_vae.")} == set(_fixture_keys("audio_vae"))
    # same config as the fixture: same names AND shapes
    assert {k: v.shape for k, v in ck.items() if k.startswith("vocoder.")} == _fixture_keys("vocoder")
    up = read_header(tiny["spatial_upsampler"]).tensors
    assert {k: v.shape for k, v in up.items()} == _fixture_keys("upsampler_x2")
    lm = {k for k in read_header(tiny["gemma"] / "model-00001-of-00002.safetensors").tensors} | \
         {k for k in read_header(tiny["gemma"] / "model-00002-of-00002.safetensors").tensors}
    assert lm == set(_fixture_keys("gemma3_tiny", lambda k: k.startswith("language_model.model.")))


# ============================================================================ loading and running
@pytest.fixture(scope="module")
def text_context(tiny):
    from ltx2.models.text import GemmaTokenizer, load_embeddings_processor, load_gemma

    t0 = time.perf_counter()
    tok = GemmaTokenizer.from_folder(tiny["gemma"])
    gemma = load_gemma(tiny["gemma"])
    emb = load_embeddings_processor(tiny["checkpoint"])
    TIMES["load_text"] = time.perf_counter() - t0
    prompts = tok([PROMPT, "ünïcödé prompt 日本"])
    assert prompts.input_ids.shape == (2, 1024)
    assert all(n < 200 for n in prompts.lengths)
    assert tok.tokenizer.token_to_id("<unk>") not in np.array(prompts.input_ids).tolist()[1]  # byte fallback
    states = gemma(prompts.input_ids, prompts.attention_mask)
    assert len(states) == configs.GEMMA_LAYERS + 1
    ctx = emb(states, prompts.attention_mask)
    mx.eval(ctx.video, ctx.audio)
    return ctx


def test_text_encoder_runs(text_context):
    assert text_context.video.shape == text_context.audio.shape == (2, 1024, configs.GEMMA_HIDDEN)
    assert _finite(text_context.video) and _finite(text_context.audio)
    assert float(mx.std(text_context.video)) > 0.1


def _modality(latent_tokens, positions, context, sigma=0.8):
    from ltx2.models.transformer import ModalityInput

    b, n, _ = latent_tokens.shape
    return ModalityInput(latent=latent_tokens, sigma=mx.full((b,), sigma), timesteps=mx.full((b, n), sigma),
                         positions=positions, context=context)


def _stage_inputs(cfg: dict, width: int, height: int, context) -> tuple:
    from ltx2.stages.sampling import (audio_latent_shape, audio_positions, patchify_audio, patchify_video,
                                      video_latent_shape, video_positions)

    t, dd = cfg["transformer"], cfg["audio_vae"]["model"]["params"]["ddconfig"]
    vs = video_latent_shape(FRAMES, height, width, channels=cfg["vae"]["latent_channels"])
    as_ = audio_latent_shape(FRAMES, FPS, channels=dd["z_channels"], mel_bins=dd["mel_bins"] // 4)
    v = mx.random.normal(vs.shape, key=mx.random.key(1))
    a = mx.random.normal(as_.shape, key=mx.random.key(2))
    video = _modality(patchify_video(v), video_positions(vs.frames, vs.height, vs.width, FPS), context.video[:1])
    audio = _modality(patchify_audio(a), audio_positions(as_.frames), context.audio[:1])
    assert video.latent.shape[-1] == t["in_channels"] and audio.latent.shape[-1] == t["audio_in_channels"]
    return vs, as_, video, audio


def test_transformer_runs_on_the_text_contexts_and_vae_latents(tiny, text_context):
    from ltx2.models.transformer import Perturbation, load_transformer

    cfg = read_header(tiny["checkpoint"]).config()
    t0 = time.perf_counter()
    model = load_transformer(tiny["checkpoint"])
    TIMES["load_transformer"] = time.perf_counter() - t0
    vs, as_, video, audio = _stage_inputs(cfg, WIDTH // 2, HEIGHT // 2, text_context)
    assert (vs.frames, vs.height, vs.width, as_.frames) == (2, 2, 3, 9)
    stg = Perturbation.stg(official_stg_blocks(MODEL_VERSION, cfg["transformer"]["num_layers"]))
    for pert in (None, stg, Perturbation.isolate_modalities()):
        v0, a0 = model.denoise(video, audio, pert)
        mx.eval(v0, a0)
        assert v0.shape == (1, vs.tokens, vs.channels) and a0.shape == (1, as_.frames, as_.channels * as_.mel_bins)
        assert _finite(v0) and _finite(a0)
    plain, perturbed = model.denoise(video, audio)[0], model.denoise(video, audio, stg)[0]
    assert not mx.array_equal(plain, perturbed).item()  # STG on the last block changes the prediction


def test_distilled_lora_fuses_and_the_refined_transformer_runs(tiny, text_context):
    from ltx2.models.transformer import LTX2Transformer, TransformerConfig
    from ltx2.models.transformer import loader
    from ltx2.models.weights import load_strict

    h = read_header(tiny["checkpoint"])
    raw = load_tensors(h, loader.TRANSFORMER_KEYMAP.select(h.tensors))
    base = {k[len(loader.PREFIX):]: v for k, v in raw.items()}
    fused = fuse_lora(base, tiny["distilled_lora"], 1.0)
    lora = read_header(tiny["distilled_lora"])
    targets = {k[len("diffusion_model."):-len(".lora_A.weight")] + ".weight" for k in lora.tensors if "lora_A" in k}
    assert targets and all(not mx.array_equal(fused[k], base[k]).item() for k in targets)
    assert all(fused[k] is base[k] for k in base if k not in targets)
    model = LTX2Transformer(TransformerConfig.from_config(h.config()))
    load_strict(model, loader.TRANSFORMER_KEYMAP.to_module({loader.PREFIX + k: v for k, v in fused.items()}),
                "transformer + distilled LoRA")
    # what the refine stage loads: the same fused weights
    _assert_same_params(model, loader.load_transformer(tiny["checkpoint"], loras=[(tiny["distilled_lora"], 1.0)]))
    cfg = h.config()
    vs, as_, video, audio = _stage_inputs(cfg, WIDTH, HEIGHT, text_context)  # stage 2: full size
    assert (vs.height, vs.width) == (4, 6)
    v0, a0 = model.denoise(video, audio)
    mx.eval(v0, a0)
    assert v0.shape == (1, 48, vs.channels) and _finite(v0) and _finite(a0)


def test_upsampler_doubles_the_stage1_latent(tiny):
    from ltx2.models.upsampler import load_latent_statistics, load_upsampler, upsample_latent

    up = load_upsampler(tiny["spatial_upsampler"])
    stats = load_latent_statistics(tiny["checkpoint"])
    c = configs.VIDEO_LATENT_CHANNELS
    latent = mx.random.normal((1, c, 2, HEIGHT // 64, WIDTH // 64), key=mx.random.key(3))
    out = upsample_latent(latent, up, stats)
    mx.eval(out)
    assert out.shape == (1, c, 2, HEIGHT // 32, WIDTH // 32) and _finite(out)


def test_video_vae_decodes_and_encodes_at_the_job_size(tiny):
    from ltx2.models.video_vae import load_video_decoder, load_video_encoder

    dec = load_video_decoder(tiny["checkpoint"])
    enc = load_video_encoder(tiny["checkpoint"])
    assert not dec.needs_noise  # as the real LTX-2 decoder: no timestep conditioning, no injected noise
    c = configs.VIDEO_LATENT_CHANNELS
    latent = mx.random.normal((1, 2, HEIGHT // 32, WIDTH // 32, c), key=mx.random.key(4))  # channels-last
    video = dec(latent)
    mx.eval(video)
    assert video.shape == (1, FRAMES, HEIGHT, WIDTH, 3) and _finite(video)
    back = enc(mx.clip(video, -1, 1))
    mx.eval(back)
    assert back.shape == latent.shape and _finite(back)


def test_audio_vae_and_vocoder_make_the_job_audio(tiny):
    from ltx2.models.audio_vae import load_audio_decoder, load_audio_encoder
    from ltx2.models.vocoder import load_vocoder
    from ltx2.stages.sampling import audio_latent_frames

    dd = configs.AUDIO_VAE["model"]["params"]["ddconfig"]
    dec, enc, voc = load_audio_decoder(tiny["checkpoint"]), load_audio_encoder(tiny["checkpoint"]), \
        load_vocoder(tiny["checkpoint"])
    frames = audio_latent_frames(FRAMES, FPS)
    latent = mx.random.normal((1, dd["z_channels"], frames, dd["mel_bins"] // 4), key=mx.random.key(5))
    mel = dec(latent)
    mx.eval(mel)
    assert mel.shape == (1, 2, 4 * frames - 3, dd["mel_bins"]) and _finite(mel)
    wav = voc(mel)
    mx.eval(wav)
    hop = int(np.prod(configs.VOCODER["upsample_rates"]))
    assert wav.shape == (1, 2, mel.shape[2] * hop) and _finite(wav)
    assert float(mx.max(mx.abs(wav))) <= 1.0
    z = enc(mel)
    mx.eval(z)
    assert z.shape[:2] == (1, dd["z_channels"]) and z.shape[3] == dd["mel_bins"] // 4 and _finite(z)


# ============================================================================ inverse key maps
def test_transformer_round_trip(tiny, tmp_path):
    from ltx2.models.transformer import load_transformer
    from ltx2.models.transformer.loader import to_checkpoint

    m = load_transformer(tiny["checkpoint"])
    ck = to_checkpoint(m)
    # the inverse gives back exactly the file's tensors, under the same (official) names
    h = read_header(tiny["checkpoint"])
    assert set(ck) == {k for k in h.tensors if k.startswith("model.diffusion_model.")
                       and "_embeddings_connector." not in k}
    m2 = load_transformer(_write_f32(tmp_path / "t.safetensors", ck, h.config()))
    _assert_same_params(m, m2)


def test_official_fixture_keys_are_reproduced_by_the_inverses():
    """On files made by the official code, load -> to_checkpoint gives back every key and value."""
    from ltx2.models.text import gemma, load_embeddings_processor, load_gemma
    from ltx2.models.text.embeddings import to_checkpoint as text_to_checkpoint
    from ltx2.models.transformer import load_transformer
    from ltx2.models.transformer.loader import FOREIGN_PREFIXES, to_checkpoint

    cases = [
        (to_checkpoint(load_transformer(FIXTURES / "transformer_ltx2.safetensors")), "transformer_ltx2",
         lambda k: not k.startswith(FOREIGN_PREFIXES)),
        (text_to_checkpoint(load_embeddings_processor(FIXTURES / "connector_ltx2.safetensors")), "connector_ltx2",
         lambda k: True),
        (gemma.to_checkpoint(load_gemma(FIXTURES / "gemma3_tiny.safetensors")), "gemma3_tiny",
         lambda k: k.startswith("language_model.model.")),
    ]
    for ours, name, keep in cases:
        h = read_header(FIXTURES / f"{name}.safetensors")
        ref = load_tensors(h, [k for k in h.tensors if keep(k)])
        assert sorted(ours) == sorted(ref), name
        for k in ref:
            assert mx.array_equal(ours[k], ref[k]).item(), (name, k)


def test_text_round_trip(tiny, tmp_path):
    from ltx2.models.text import gemma, load_embeddings_processor, load_gemma
    from ltx2.models.text.embeddings import to_checkpoint

    cfg = read_header(tiny["checkpoint"]).config()
    ep = load_embeddings_processor(tiny["checkpoint"])
    _assert_same_params(ep, load_embeddings_processor(_write_f32(tmp_path / "e.safetensors", to_checkpoint(ep), cfg)))
    g = load_gemma(tiny["gemma"])
    folder = tmp_path / "gemma"
    folder.mkdir()
    (folder / "config.json").write_text((tiny["gemma"] / "config.json").read_text())
    _write_f32(folder / "model.safetensors", gemma.to_checkpoint(g), None)
    _assert_same_params(g.model, load_gemma(folder).model)
    # the other known Gemma export layout reads back the same
    _write_f32(folder / "model.safetensors", gemma.to_checkpoint(g, "model.language_model."), None)
    _assert_same_params(g.model, load_gemma(folder).model)


def test_video_vae_round_trip(tiny, tmp_path):
    from ltx2.models.video_vae import load_video_decoder, load_video_encoder
    from ltx2.models.video_vae.loading import to_checkpoint

    cfg = read_header(tiny["checkpoint"]).config()
    enc, dec = load_video_encoder(tiny["checkpoint"]), load_video_decoder(tiny["checkpoint"])
    path = _write_f32(tmp_path / "v.safetensors", to_checkpoint(encoder=enc, decoder=dec), cfg)
    _assert_same_params(enc, load_video_encoder(path))
    _assert_same_params(dec, load_video_decoder(path))


def test_audio_vae_and_vocoder_round_trip(tiny, tmp_path):
    from ltx2.models.audio_vae import load_audio_decoder, load_audio_encoder
    from ltx2.models.audio_vae.loading import to_checkpoint as audio_to_checkpoint
    from ltx2.models.vocoder import load_vocoder
    from ltx2.models.vocoder.loading import to_checkpoint as vocoder_to_checkpoint

    cfg = read_header(tiny["checkpoint"]).config()
    enc, dec, voc = (load_audio_encoder(tiny["checkpoint"]), load_audio_decoder(tiny["checkpoint"]),
                     load_vocoder(tiny["checkpoint"]))
    ck = {**audio_to_checkpoint(encoder=enc, decoder=dec), **vocoder_to_checkpoint(voc)}
    path = _write_f32(tmp_path / "a.safetensors", ck, cfg)
    _assert_same_params(enc, load_audio_encoder(path))
    _assert_same_params(dec, load_audio_decoder(path))
    _assert_same_params(voc, load_vocoder(path))


def test_upsampler_round_trip(tiny, tmp_path):
    from ltx2.models.upsampler import load_upsampler
    from ltx2.models.upsampler.loader import to_checkpoint

    up = load_upsampler(tiny["spatial_upsampler"])
    cfg = read_header(tiny["spatial_upsampler"]).config()
    _assert_same_params(up, load_upsampler(_write_f32(tmp_path / "u.safetensors", to_checkpoint(up), cfg)))


# ============================================================================ LoRA fusion
def _lora_file(path: Path, tensors: dict[str, np.ndarray]) -> Path:
    write_safetensors(path, tensors, {}, dtype="F32")
    return path


def test_fuse_lora_adds_strength_times_b_at_a(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 5)).astype(np.float32)
    a, b = rng.standard_normal((2, 5)).astype(np.float32), rng.standard_normal((6, 2)).astype(np.float32)
    path = _lora_file(tmp_path / "l.safetensors", {"diffusion_model.blk.to_q.lora_A.weight": a,
                                                   "diffusion_model.blk.to_q.lora_B.weight": b,
                                                   "diffusion_model.blk.to_q.alpha": np.array([2.0], np.float32)})
    weights = {"blk.to_q.weight": mx.array(w), "blk.to_q.bias": mx.zeros((6,)), "other.weight": mx.ones((3, 3))}
    out = fuse_lora(weights, path, 0.7)
    np.testing.assert_allclose(np.array(out["blk.to_q.weight"]), w + 0.7 * (b @ a), rtol=1e-6, atol=1e-6)
    assert out["blk.to_q.bias"] is weights["blk.to_q.bias"] and out["other.weight"] is weights["other.weight"]
    assert mx.array_equal(fuse_lora(weights, path, 0.0)["blk.to_q.weight"], weights["blk.to_q.weight"]).item()
    bf = fuse_lora({**weights, "blk.to_q.weight": mx.array(w).astype(mx.bfloat16)}, path, 1.0)
    assert bf["blk.to_q.weight"].dtype == mx.bfloat16  # fused in float32, stored back in the weight's dtype


def test_fuse_lora_names_what_does_not_match(tmp_path):
    a, b = np.ones((2, 5), np.float32), np.ones((6, 2), np.float32)
    path = _lora_file(tmp_path / "l.safetensors", {
        "diffusion_model.blk.to_q.lora_A.weight": a, "diffusion_model.blk.to_q.lora_B.weight": b,
        "diffusion_model.video_embeddings_connector.x.lora_A.weight": a,
        "diffusion_model.video_embeddings_connector.x.lora_B.weight": b})
    weights = {"blk.to_q.weight": mx.zeros((6, 5))}
    with pytest.raises(CheckpointError, match="video_embeddings_connector.x.lora_A.weight"):
        fuse_lora(weights, path, 1.0)
    out = fuse_lora(weights, path, 1.0, ignore_prefixes=("video_embeddings_connector.",))
    assert mx.array_equal(out["blk.to_q.weight"], mx.full((6, 5), 2.0)).item()
    with pytest.raises(CheckpointError, match=r"must be \(out, in\)"):
        fuse_lora({"blk.to_q.weight": mx.zeros((5, 6))}, path, 1.0,
                  ignore_prefixes=("video_embeddings_connector.",))
    lonely = _lora_file(tmp_path / "half.safetensors", {"diffusion_model.blk.to_q.lora_A.weight": a})
    with pytest.raises(CheckpointError, match="without their partner"):
        fuse_lora(weights, lonely, 1.0)


def test_report_times(tiny):
    """Not a check: prints how long generation and loading took (run with -s to see it)."""
    sizes = {str(p.relative_to(tiny["checkpoint"].parent)): p.stat().st_size
             for p in sorted(tiny["checkpoint"].parent.rglob("*")) if p.is_file()}
    print(f"\ntiny model: {sum(sizes.values()) / 1e6:.2f} MB; times (s): "
          + ", ".join(f"{k} {v:.2f}" for k, v in TIMES.items()) + f"; files: {sizes}")
