"""`ltx2 weights check` and the job's model slots: what a file is, from its header, and a wrong file refused early."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from ltx2.cli.main import app
from ltx2.models.tiny import ensure_tiny_model
from ltx2.models.weights import identify as ident
from ltx2.orchestrator.job import JobError, parse_job
from ltx2.spec.layout import CHECKPOINT_PARTS, COMPONENTS
from ltx2.stages.registry import readers_of, stage_def, stage_names

SEED0 = Path(__file__).parents[1] / "fixtures" / "seed0"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    return ensure_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def truncated_copy(src: Path, dst: Path, cut: int = 1000) -> Path:
    dst.write_bytes(src.read_bytes()[:-cut])
    return dst


def with_metadata(src: Path, dst: Path, **metadata: str) -> Path:
    """A copy of safetensors ``src`` with ``metadata`` set in its header (the tensors unchanged)."""
    raw = src.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    header["__metadata__"] = {**header.get("__metadata__", {}), **metadata}
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    dst.write_bytes(len(head).to_bytes(8, "little") + head + raw[8 + n:])
    return dst


def gemma_copy(tiny, dst: Path, drop: str | None = None) -> Path:
    shutil.copytree(tiny["gemma"], dst)
    if drop:
        (dst / drop).unlink()
    return dst


def check(*paths) -> tuple[int, str]:
    r = CliRunner().invoke(app, ["weights", "check", *map(str, paths)], terminal_width=200)
    return r.exit_code, " ".join(r.output.split())


# ----------------------------------------------------------------------------- identify

def test_each_kind_is_told_from_its_header(tiny):
    ck = ident.identify(tiny["checkpoint"], readers=readers_of)
    assert ck.kind == ident.CHECKPOINT and ck.ok, ck.problems
    assert ck.info["version"] == "LTX-2" and ck.info["num_layers"] == 2
    parts = {p.name: p for p in ck.parts}
    assert parts["transformer"].readers == ("denoise", "refine")
    assert parts["text connectors"].readers == parts["text projection"].readers == ("text-encode",)
    assert parts["video VAE decoder"].readers == ("decode",) and parts["vocoder"].readers == ("vocode",)
    assert "upscale" in parts["video VAE statistics"].readers
    assert sum(p.tensors for p in ck.parts) == sum(ck.dtypes.values()) == 613  # every tensor in exactly one part
    up = ident.identify(tiny["spatial_upsampler"], readers=readers_of)
    assert (up.kind, up.info["mode"], up.info["spatial_scale"]) == (ident.UPSAMPLER, "spatial", 2.0)
    lora = ident.identify(tiny["distilled_lora"], readers=readers_of)
    assert lora.kind == ident.LORA and lora.info["ranks"] == [4] and lora.info["targets"] == 56
    gemma = ident.identify(tiny["gemma"], readers=readers_of)
    assert gemma.kind == ident.GEMMA and gemma.ok and gemma.info["tokenizer"] and gemma.info["num_layers"] == 3
    shard = ident.identify(next(tiny["gemma"].glob("model-*.safetensors")), readers=readers_of)
    assert shard.kind == ident.GEMMA_SHARD and "give the folder" in shard.title
    temporal = ident.identify(SEED0 / "upsampler_temporal_x2.safetensors", readers=readers_of)
    assert temporal.info["mode"] == "temporal" and "temporal x2" in temporal.title


def test_fp8_dtype_mix_and_ltx23_config_are_reported():
    r = ident.identify(SEED0 / "transformer_fp8_scaled.safetensors", readers=readers_of)
    assert r.dtypes == {"BF16": 214, "F8_E4M3": 56, "F32": 112}  # 56 weight_scale + 56 input_scale
    assert any("56 E4M3 tensors in blocks 1-2" in f and "weight_scale" in f for f in r.facts)
    cast = ident.identify(SEED0 / "transformer_fp8_cast.safetensors", readers=readers_of)
    assert any("cast-only" in f for f in cast.facts)
    r23 = ident.identify(SEED0 / "transformer_ltx23.safetensors", readers=readers_of)  # header only: truncated as well
    assert r23.info["version"] == "LTX-2.3" and r23.info["model_version"] == "2.3"
    assert any(f.startswith("LTX-2.3 layout: apply_gated_attention=True") for f in r23.facts)
    assert not any("not supported" in p for p in r23.problems)  # LTX-2.3 is a supported version now
    assert r23.problems[0].startswith("truncated: 230 of 230 tensors")


def test_prefixes_agree_with_the_loaders():
    from ltx2.models.text import embeddings, gemma
    from ltx2.models.transformer import loader
    from ltx2.models.upsampler import statistics
    from ltx2.models.video_vae import loading

    assert ident.TRANSFORMER_PREFIX == loader.PREFIX and ident.CONNECTOR_PREFIXES == loader.FOREIGN_PREFIXES
    assert ident.CONNECTOR_PREFIXES == (embeddings.VIDEO_CONNECTOR_PREFIX, embeddings.AUDIO_CONNECTOR_PREFIX)
    assert embeddings.FEATURES_PREFIX.startswith("text_embedding_projection.")
    assert ident.GEMMA_LM_PREFIXES == gemma.LM_PREFIXES
    assert all(k.startswith("vae.per_channel_statistics.") for k in loading.STATS_KEYS)
    assert statistics.STATS_PREFIX == "vae.per_channel_statistics."


def test_readers_are_the_registry_s_declarations():
    for name in stage_names():
        for role, part in stage_def(name).weights.items():
            assert name in (readers_of(role=role) if part is None else readers_of(prefixes=CHECKPOINT_PARTS[part]))
    assert readers_of(role="lora.2") == ("denoise", "refine") and readers_of(role="distilled_lora") == ("denoise", "refine")  # HQ: stage 1 too
    # conditioning images and videos (registry order without a pipeline order)
    assert readers_of(prefixes=COMPONENTS["video VAE encoder"]) == ("image-encode", "video-encode")
    assert readers_of(role="nothing") == ()
    assert readers_of(prefixes=COMPONENTS["text connectors"]) == ("text-encode",)  # not the transformer's
    stats = COMPONENTS["video VAE statistics"]
    assert readers_of(prefixes=stats, order=("upscale", "temporal-upscale")) == (
        "upscale", "temporal-upscale", "decode", "image-encode", "video-encode")


# ----------------------------------------------------------------------------- the command

def test_check_passes_on_a_complete_set_and_shows_the_stages(tiny):
    code, out = check(tiny["checkpoint"].parent)  # a folder: its files and its Gemma folder
    assert code == 0, out
    for words in ("single-file checkpoint", "latent upsampler, spatial x2", "latent upsampler, temporal x2",
                  "LoRA, rank 4", "Gemma-3 text encoder folder", "denoise, refine", "text-encode", "temporal-upscale",
                  "upscale, temporal-upscale, decode", "5 files: no problems"):
        assert words in out, words


@pytest.mark.parametrize("case, expected", [
    ("truncated", "truncated: "),
    ("missing shard", "missing shards: 1 of the 2 files the index names are absent: model-00002-of-00002"),
    ("no tokenizer", "no tokenizer.json"),
    ("version mismatch", "model_version '2.3.0' metadata says LTX-2.3 (22B) but the config has none of the LTX-2.3 "
                         "switches"),
    ("not safetensors", "too short to be a safetensors file"),
    ("lora for another model", "not in the checkpoint's transformer"),
])
def test_check_names_each_problem_and_exits_1(tiny, tmp_path, case, expected):
    if case == "truncated":
        paths = [truncated_copy(tiny["checkpoint"], tmp_path / "ltx-2-19b-distilled.safetensors")]
    elif case == "missing shard":
        paths = [gemma_copy(tiny, tmp_path / "gemma", drop="model-00002-of-00002.safetensors")]
    elif case == "no tokenizer":
        paths = [gemma_copy(tiny, tmp_path / "gemma", drop="tokenizer.json")]
    elif case == "version mismatch":
        paths = [with_metadata(tiny["checkpoint"], tmp_path / "mixed.safetensors", model_version="2.3.0")]
    elif case == "not safetensors":
        (tmp_path / "x.safetensors").write_bytes(b"<html>")
        paths = [tmp_path / "x.safetensors"]
    else:
        paths = [tiny["checkpoint"], SEED0 / "transformer_lora.lora_0.safetensors"]
    code, out = check(*paths)
    assert code == 1 and expected in out, out
    assert "have problems" in out


def test_variant_comes_from_the_metadata_or_says_where_it_came_from(tiny, tmp_path):
    named = tmp_path / "ltx-2-19b-distilled.safetensors"
    shutil.copy(tiny["checkpoint"], named)
    assert ident.identify(named, readers=readers_of).info["variant"] == "distilled"
    assert any("file name only" in f for f in ident.identify(named, readers=readers_of).facts)
    assert ident.identify(tiny["checkpoint"], readers=readers_of).info["variant"] == "unknown"


# ----------------------------------------------------------------------------- job slots and `ltx2 plan`

def _model(tiny, **over) -> dict:
    m = {"checkpoint": str(tiny["checkpoint"]), "gemma": str(tiny["gemma"]),
         "spatial_upsampler": str(tiny["spatial_upsampler"]), "distilled_lora": str(tiny["distilled_lora"])}
    m.update({k: str(v) for k, v in over.items()})
    return m


def _problems(model: dict) -> list[str]:
    with pytest.raises(JobError) as e:
        parse_job({"prompt": "x", "pipeline": "two-stage", "model": model})
    return e.value.problems


def test_the_right_files_pass(tiny):
    job = parse_job({"prompt": "x", "pipeline": "two-stage", "model": _model(tiny)})
    assert job.model.checkpoint == tiny["checkpoint"]


@pytest.mark.parametrize("slot, wrong, expected", [
    ("checkpoint", "spatial_upsampler", "model.checkpoint: '{}' is a latent upsampler, spatial x2, not the single-file "
                                        "LTX-2 checkpoint; give the path of the single-file LTX-2 checkpoint"),
    ("spatial_upsampler", "checkpoint", "model.spatial_upsampler: '{}' is an LTX-2 single-file checkpoint"),
    ("checkpoint", "distilled_lora", "model.checkpoint: '{}' is a LoRA, rank 4, 56 adapted weights, not the "
                                     "single-file LTX-2 checkpoint"),
    ("distilled_lora", "checkpoint", "model.distilled_lora: '{}' is an LTX-2 single-file checkpoint"),
    ("distilled_lora", "spatial_upsampler", "model.distilled_lora: '{}' is a latent upsampler, spatial x2, not a LoRA"),
])
def test_a_file_in_the_wrong_slot_is_refused_with_the_reason(tiny, slot, wrong, expected):
    found = _problems(_model(tiny, **{slot: tiny[wrong]}))
    assert len(found) == 1 and found[0].startswith(expected.format(tiny[wrong])), found
    assert "belongs under" in found[0]


def test_truncated_temporal_foreign_and_incomplete_files_are_refused(tiny, tmp_path):
    cut = truncated_copy(tiny["checkpoint"], tmp_path / "cut.safetensors")
    found = _problems(_model(tiny, checkpoint=cut))
    assert len(found) == 1 and "is truncated: " in found[0] and "re-download the single-file" in found[0], found
    found = _problems(_model(tiny, spatial_upsampler=SEED0 / "upsampler_temporal_x2.safetensors"))
    assert "is a latent upsampler, temporal x2, not the spatial x2 latent upscaler" in found[0], found
    # LTX-2.3's x1.5 rational upsampler is accepted (stage 1 at 2/3 of the target; tests/orchestrator/test_hq.py)
    parse_job({"prompt": "x", "pipeline": "two-stage", "width": 1152, "height": 768,
               "model": _model(tiny, spatial_upsampler=SEED0 / "upsampler_x1_5_rational.safetensors")})
    parse_job({"prompt": "x", "pipeline": "two-stage",  # an x2 rational upsampler is accepted
               "model": _model(tiny, spatial_upsampler=SEED0 / "upsampler_x2_rational.safetensors")})
    found = _problems(_model(tiny, distilled_lora=SEED0 / "transformer_lora.lora_0.safetensors"))
    assert "does not fit the checkpoint" in found[0] and "transformer_blocks.2" in found[0], found
    found = _problems(_model(tiny, gemma=gemma_copy(tiny, tmp_path / "g1", drop="tokenizer.json")))
    assert found[0].startswith("model.gemma: ") and "is an incomplete Gemma folder: no tokenizer.json" in found[0]
    found = _problems(_model(tiny, gemma=gemma_copy(tiny, tmp_path / "g2", drop="model-00001-of-00002.safetensors")))
    assert "missing shards: 1 of the 2 files" in found[0], found
    found = _problems(_model(tiny, checkpoint=SEED0 / "transformer_ltx23.safetensors"))
    assert "truncated" in found[0]  # the header-only 2.3 fixture: truncation is named first


def test_plan_refuses_a_wrong_file_before_anything_runs(tiny, tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({"prompt": "x", "pipeline": "distilled", "width": 64, "height": 64, "frames": 9,
                                   "model": _model(tiny, checkpoint=tiny["spatial_upsampler"],
                                                   spatial_upsampler=tiny["checkpoint"])}))
    r = CliRunner().invoke(app, ["plan", str(job)], terminal_width=200)
    out = " ".join(r.output.split())
    assert r.exit_code == 2, out
    assert "model.checkpoint:" in out and "is a latent upsampler, spatial x2" in out
    assert "model.spatial_upsampler:" in out and "is an LTX-2 single-file checkpoint" in out
    assert not (tmp_path / "job.work").exists()


def test_slot_checks_read_headers_only(tiny, tmp_path):
    """A checkpoint whose tensor bytes are garbage still identifies (nothing past the header is read)."""
    raw = bytearray(tiny["checkpoint"].read_bytes())
    n = int.from_bytes(raw[:8], "little")
    raw[8 + n:] = b"\xff" * (len(raw) - 8 - n)
    p = tmp_path / "garbage.safetensors"
    p.write_bytes(bytes(raw))
    assert ident.slot_problem(p, "checkpoint", readers=readers_of) is None
    assert json.loads(json.dumps(ident.identify(p, readers=readers_of).info))["version"] == "LTX-2"


# ----------------------------------------------------------------------------- LTX-2.3

@pytest.fixture(scope="module")
def tiny23(tmp_path_factory) -> dict[str, Path]:
    return ensure_tiny_model(tmp_path_factory.mktemp("tiny23") / "model", variant="tiny-2.3")


def test_an_ltx23_checkpoint_is_named_with_its_kind_and_upsamplers(tiny23, tmp_path):
    ck = ident.identify(tiny23["checkpoint"], readers=readers_of)
    assert ck.kind == ident.CHECKPOINT and ck.ok, ck.problems
    assert (ck.info["version"], ck.info["model_version"], ck.info["num_layers"]) == ("LTX-2.3", "2.3", 2)
    assert ck.title.startswith("LTX-2.3 single-file checkpoint (dev or distilled not recorded)")
    assert any("vocoder.bwe" in f for f in ck.facts)
    # the official 2.3 names say dev / distilled when the header does not
    for name, variant in (("ltx-2.3-22b-distilled.safetensors", "distilled"), ("ltx-2.3-22b-dev.safetensors", "dev")):
        shutil.copy(tiny23["checkpoint"], tmp_path / name)
        r = ident.identify(tmp_path / name, readers=readers_of)
        assert r.info["variant"] == variant and r.info["short"] == f"LTX-2.3 single-file checkpoint ({variant})"
    # the upsamplers, as their configs and the official 2.3 file names say
    for src, name, title in (
            (tiny23["spatial_upsampler"], "ltx-2.3-spatial-upscaler-x2-1.1.safetensors",
             "latent upsampler, spatial x2 (LTX-2.3, v1.1)"),
            (SEED0 / "upsampler_x1_5_rational.safetensors", "ltx-2.3-spatial-upscaler-x1.5-1.0.safetensors",
             "latent upsampler, spatial x1.5 (rational resampler) (LTX-2.3, v1.0)"),
            (tiny23["temporal_upsampler"], "ltx-2.3-temporal-upscaler-x2-1.0.safetensors",
             "latent upsampler, temporal x2 (LTX-2.3, v1.0)")):
        shutil.copy(src, tmp_path / name)
        assert ident.identify(tmp_path / name, readers=readers_of).title == title
    # the tiny 2.3 upsampler says its version in its metadata
    assert ident.identify(tiny23["spatial_upsampler"], readers=readers_of).title == \
        "latent upsampler, spatial x2 (LTX-2.3)"
    assert ident.identify(tiny23["distilled_lora"], readers=readers_of).info["model_version"] == "2.3"


def test_weights_check_passes_on_the_tiny_23_files(tiny23):
    code, out = check(*tiny23.values())
    assert code == 0, out
    for words in ("LTX-2.3 single-file checkpoint", "latent upsampler, spatial x2 (LTX-2.3)",
                  "latent upsampler, temporal x2 (LTX-2.3)", "made for LTX-2.3", "5 files: no problems"):
        assert words in out, words


def test_a_lora_of_the_other_version_is_refused_when_the_job_is_read(tiny, tiny23, tmp_path):
    # a 2.3 LoRA (its metadata says so) on a 2.0 checkpoint: same shapes, refused by its version
    found = _problems(_model(tiny, distilled_lora=tiny23["distilled_lora"]))
    assert len(found) == 1 and found[0].startswith(f"model.distilled_lora: '{tiny23['distilled_lora']}' is a LoRA for "
                                                   "LTX-2.3 (22B) (model_version 'tiny-2.3' metadata), but the "
                                                   f"checkpoint {tiny['checkpoint'].name} is LTX-2 (19B)"), found
    # the reverse: a 2.0 LoRA named as the official 19B one, on a 2.3 checkpoint; and as a user LoRA
    named = tmp_path / "ltx-2-19b-distilled-lora-384.safetensors"
    shutil.copy(tiny["distilled_lora"], named)
    found = _problems(_model(tiny23, distilled_lora=named))
    assert len(found) == 1 and "is a LoRA for LTX-2 (19B) (file name only)" in found[0], found
    found = _problems({**_model(tiny23), "loras": [{"path": str(named)}]})
    assert len(found) == 1 and found[0].startswith("model.loras: a list item 1 (") and "LTX-2 (19B)" in found[0], found
    # each with its own version passes; a LoRA that says nothing is judged by its shapes alone
    parse_job({"prompt": "x", "pipeline": "two-stage", "model": _model(tiny23)})
    parse_job({"prompt": "x", "pipeline": "two-stage", "model": _model(tiny23, distilled_lora=tiny["distilled_lora"])})
