"""Key maps and weight sources: every network's map round-trips every key (and layout) of the tiny files
exactly, the maps partition the checkpoint, and one source interface serves official and converted files.
Also the model errors' place in the exception taxonomy."""

from __future__ import annotations

import math
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from ltx2.models.audio_vae import AUDIO_DECODER_KEYMAP, AUDIO_ENCODER_KEYMAP, AudioConfigError
from ltx2.models.networks import NETWORKS
from ltx2.models.text import ConnectorConfigError, GemmaConfigError, PromptTooLongError, TextConfigError
from ltx2.models.text.embeddings import TEXT_EMBEDDINGS_KEYMAP
from ltx2.models.text.gemma import GEMMA_KEYMAP
from ltx2.models.tiny import ensure_tiny_model
from ltx2.models.transformer import TRANSFORMER_KEYMAP, TransformerConfigError
from ltx2.models.upsampler import UPSAMPLER_KEYMAP, UpsamplerConfigError
from ltx2.models.upsampler.statistics import LATENT_STATISTICS_KEYMAP
from ltx2.models.video_vae import VIDEO_DECODER_KEYMAP, VIDEO_ENCODER_KEYMAP, DecodeDoesNotFit, VAEConfigError
from ltx2.models.vocoder import VOCODER_KEYMAP, VocoderConfigError
from ltx2.models.weights import CheckpointError, load_tensors, read_header
from ltx2.models.weights.conversion import ConvertError, convert_checkpoint
from ltx2.models.weights.manifest import ManifestError
from ltx2.models.weights.modes import WeightsModeError
from ltx2.models.weights.keymap import CONV, FLAT_FILTER, KeyMap, LayoutRule, Rename, Root
from ltx2.models.weights.source import ConvertedSource, OfficialSource, open_source
from ltx2.spec.errors import BadInputError, DoesNotFitError

# the networks of the single-file checkpoint (the latent statistics are shared by the video VAE halves)
CHECKPOINT_MAPS = {"transformer": TRANSFORMER_KEYMAP, "text_embeddings": TEXT_EMBEDDINGS_KEYMAP,
                   "video_encoder": VIDEO_ENCODER_KEYMAP, "video_decoder": VIDEO_DECODER_KEYMAP,
                   "audio_encoder": AUDIO_ENCODER_KEYMAP, "audio_decoder": AUDIO_DECODER_KEYMAP,
                   "vocoder": VOCODER_KEYMAP, "latent_statistics": LATENT_STATISTICS_KEYMAP}
CASES = [(name, "checkpoint") for name in CHECKPOINT_MAPS] + [
    ("upsampler", "spatial_upsampler"), ("upsampler", "temporal_upsampler"), ("gemma", "gemma")]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    return ensure_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def _keymap(name: str) -> KeyMap:
    return {**CHECKPOINT_MAPS, "upsampler": UPSAMPLER_KEYMAP, "gemma": GEMMA_KEYMAP}[name]


@pytest.mark.parametrize("name,role", CASES)
def test_every_key_and_layout_round_trips_through_the_map(tiny, name, role):
    src = OfficialSource(tiny[role], _keymap(name))
    km = src.keymap  # as bound to the file (Gemma: the prefix its files use)
    stored: dict[str, mx.array] = {}
    for file, keys in src.plan().items():
        stored.update(load_tensors(read_header(file), keys, None))  # as stored: no cast in between
    assert stored, name
    module = km.to_module(stored)
    assert list(module) == src.keys()
    if name in NETWORKS:  # names and (layout-changed) shapes are exactly the network's parameters
        built = {k: tuple(v.shape) for k, v in tree_flatten(NETWORKS[name].build(src).parameters())}
        assert {k: tuple(v.shape) for k, v in module.items()} == built
    if km.layouts:  # some tensor really changes layout
        assert any(module[km.module_name(k)].shape != v.shape for k, v in stored.items()), name
    back = km.to_checkpoint(module)
    assert list(back) == list(stored)
    for k, v in stored.items():
        assert back[k].shape == v.shape and back[k].dtype == v.dtype and mx.array_equal(back[k], v).item(), k


def test_the_maps_partition_the_checkpoint(tiny):
    """Every checkpoint tensor belongs to a network; only the latent statistics are shared (each VAE half
    holds a copy), and the text connectors under the transformer's prefix are the text embeddings' alone."""
    keys = read_header(tiny["checkpoint"]).tensors
    owners = {k: sorted(n for n, km in CHECKPOINT_MAPS.items() if km.owns(k)) for k in keys}
    assert all(owners.values()), [k for k, o in owners.items() if not o]
    shared = {k: o for k, o in owners.items() if len(o) > 1}
    assert set(shared) == {k for k in keys if ".per_channel_statistics." in k}
    assert all(o == ["text_embeddings"] for k, o in owners.items() if "_embeddings_connector." in k)


def test_key_map_rules():
    km = KeyMap("net", roots=(Root("a.", "", exclude=("a.other.",)), Root("a.stats.x-y", "stats.x_y", exact=True)),
                renames=(Rename("^blk_1d.", "^blocks."), Rename(".attn1.", ".attn."),
                         Rename(".attn.out.0.", ".attn.out.")),
                layouts=(LayoutRule(FLAT_FILTER, r"\.filter$"), LayoutRule(CONV, r"\.weight$", ndims=(3,))))
    assert km.module_name("a.blk_1d.0.attn1.out.0.weight") == "blocks.0.attn.out.weight"
    assert km.checkpoint_key("blocks.0.attn.out.weight") == "a.blk_1d.0.attn1.out.0.weight"
    assert km.module_name("a.x.blk_1d.0.w") == "x.blk_1d.0.w"  # an anchored rename only at the start
    assert km.module_name("a.stats.x-y") == "stats.x_y" and km.checkpoint_key("stats.x_y") == "a.stats.x-y"
    assert not km.owns("a.other.w") and not km.owns("b.w") and km.owns("a.w")
    w, f = mx.arange(24).reshape(2, 3, 4), mx.arange(5).reshape(1, 1, 5)
    m = km.to_module({"a.c.weight": w, "a.lp.filter": f})
    assert m["c.weight"].shape == (2, 4, 3) and m["lp.filter"].shape == (5,)
    assert km.module_shape("c.weight", (2, 3, 4)) == (2, 4, 3)
    back = km.to_checkpoint(m)
    assert mx.array_equal(back["a.c.weight"], w).item() and back["a.lp.filter"].shape == (1, 1, 5)
    with pytest.raises(ValueError, match="changes the rank"):
        LayoutRule(FLAT_FILTER, ndims=(3,))
    with pytest.raises(ValueError, match="anchor"):
        Rename("^x.", "y.")
    g = GEMMA_KEYMAP.bind(["model.language_model.embed_tokens.weight"])
    assert g.module_name("model.language_model.layers.0.mlp.up_proj.weight") == "model.layers.0.mlp.up_proj.weight"
    with pytest.raises(CheckpointError, match="embed_tokens.weight under one of"):
        GEMMA_KEYMAP.bind(["vision_tower.x"])


def test_one_source_interface_for_official_and_converted_files(tiny, tmp_path):
    ckpt = tiny["checkpoint"]
    convert_checkpoint(ckpt, tmp_path / "c", files=["video_decoder"])
    official = open_source(ckpt, VIDEO_DECODER_KEYMAP)
    converted = open_source(tmp_path / "c" / "video_decoder.safetensors", VIDEO_DECODER_KEYMAP)
    assert isinstance(official, OfficialSource) and isinstance(converted, ConvertedSource)
    assert not official.stores_mlx_layout and converted.stores_mlx_layout
    assert sorted(official.keys()) == sorted(converted.keys()) and official.config() == converted.config()
    assert official.shapes() == converted.shapes()
    a, b = official.read(official.keys()), converted.read(official.keys())
    assert all(mx.array_equal(a[k], b[k]).item() for k in a)
    # the convolution's copy of a weight in PyTorch layout: the largest tensor in float32; none in MLX's layout
    h = read_header(ckpt)
    largest = max(math.prod(t.shape) for k, t in h.tensors.items() if VIDEO_DECODER_KEYMAP.owns(k))
    assert official.conv_copy_bytes() == largest * 4 and converted.conv_copy_bytes() == 0
    # the latent statistics come from the converted decoder file too; the same source answers for both
    stats = open_source(tmp_path / "c" / "video_decoder.safetensors", LATENT_STATISTICS_KEYMAP)
    assert sorted(stats.keys()) == ["per_channel_statistics.mean_of_means", "per_channel_statistics.std_of_means"]
    assert open_source(official, VIDEO_DECODER_KEYMAP) is official
    with pytest.raises(CheckpointError, match="video VAE decoder source was given where the vocoder"):
        open_source(official, VOCODER_KEYMAP)
    with pytest.raises(CheckpointError, match="only be fused into the transformer"):
        open_source(ckpt, VOCODER_KEYMAP, [(tiny["distilled_lora"], 1.0)])


def test_transformer_source_reads_blocks_with_the_lora_fused(tiny):
    """Per-block reads of a source opened with a LoRA are the base tensors plus strength * B @ A, once."""
    lora = tiny["distilled_lora"]
    base = open_source(tiny["checkpoint"], TRANSFORMER_KEYMAP)
    fused = open_source(tiny["checkpoint"], TRANSFORMER_KEYMAP, [(lora, 0.5)])
    blocks, others = fused.blocks("transformer_blocks.")
    assert sorted(blocks) == [0, 1] and others and not any(n.startswith("transformer_blocks.") for n in others)
    names = blocks[1]
    w0, w1 = base.read(names), fused.read(names)
    lt = load_tensors(read_header(lora), list(read_header(lora).tensors), mx.float32)
    a = lt["diffusion_model.transformer_blocks.1.attn1.to_q.lora_A.weight"]
    b = lt["diffusion_model.transformer_blocks.1.attn1.to_q.lora_B.weight"]
    name = "transformer_blocks.1.attn1.to_q.weight"
    np.testing.assert_array_equal(np.array(w1[name]), np.array(w0[name] + (b * 0.5) @ a))
    name = "transformer_blocks.1.attn1.to_q.bias"
    assert mx.array_equal(w1[name], w0[name]).item()


def test_model_errors_are_bad_input_or_does_not_fit():
    bad = (TransformerConfigError, VAEConfigError, TextConfigError, ConnectorConfigError, GemmaConfigError,
           AudioConfigError, VocoderConfigError, UpsamplerConfigError, CheckpointError, ManifestError,
           WeightsModeError, ConvertError, PromptTooLongError)
    assert len(set(bad)) == len(bad)
    assert all(issubclass(e, BadInputError) and issubclass(e, ValueError) for e in bad)
    assert issubclass(DecodeDoesNotFit, DoesNotFitError) and issubclass(DecodeDoesNotFit, MemoryError)
