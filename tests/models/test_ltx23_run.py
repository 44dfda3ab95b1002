"""LTX-2.3 end to end on the tiny model's 2.3 variant (`model: tiny-2.3`): its files are the real 2.3 layout, the
checkpoint's metadata selects the version, and every pipeline, `ltx2 convert`, a converted render and streaming run
on it, ending in an mp4 with 48 kHz audio (the BWE vocoder's rate)."""

from __future__ import annotations

import json
from pathlib import Path

import av
import pytest
import yaml

from ltx2.models.tiny import default_tiny_dir, ensure_tiny_model
from ltx2.models.weights import read_header
from ltx2.orchestrator.job import parse_job
from ltx2.orchestrator.planner import plan_job
from ltx2.spec.versions import VERSIONS, model_version
from ltx2.stages.denoising import LatentLayout, sigmas_for, stg_blocks
from ltx2.stages.params import Guidance, Ltx2Schedule

from support import ltx2, v12_fixture_sets

SEED0 = Path(__file__).parents[1] / "fixtures" / "seed0"
TRANSFORMER = "model.diffusion_model."
CONNECTORS = (TRANSFORMER + "video_embeddings_connector.", TRANSFORMER + "audio_embeddings_connector.")


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    """$LTX2_TINY_DIR for this module's runs: `model: tiny-2.3` is generated beside it, in <it>-2.3."""
    return tmp_path_factory.mktemp("t23") / "tiny"


@pytest.fixture(scope="module")
def tiny23(tiny_root) -> dict[str, Path]:
    return ensure_tiny_model(tiny_root.with_name("tiny-2.3"), variant="tiny-2.3")


def _keys(path: Path, prefixes: tuple[str, ...], skip: tuple[str, ...] = ()) -> dict[str, tuple[int, ...]]:
    h = read_header(path)
    return {k: tuple(t.shape) for k, t in h.tensors.items() if k.startswith(prefixes) and not k.startswith(skip)}


# ----------------------------------------------------------------------------- the files

def test_tiny_23_has_the_official_23_layout(tiny23):
    """Every transformer / connector key of the official 2.3 fixtures (same tiny sizes), and their shapes."""
    ck = tiny23["checkpoint"]
    meta = read_header(ck).metadata
    assert meta["model_version"] == "tiny-2.3" and model_version(meta["model_version"]) is VERSIONS["2.3"]
    assert VERSIONS["2.3"].supported and VERSIONS["2.3"].official_steps == 30
    ours = _keys(ck, (TRANSFORMER,), CONNECTORS)
    official = _keys(SEED0 / "transformer_ltx23.safetensors", (TRANSFORMER,), CONNECTORS)
    assert set(ours) == set(official)  # gates, 9-row AdaLN, prompt AdaLN, no caption projection
    audio_io = {TRANSFORMER + "audio_patchify_proj.weight", TRANSFORMER + "audio_proj_out.weight",
                TRANSFORMER + "audio_proj_out.bias"}  # the fixture's audio tokens are 128 wide, ours 2 x 16
    assert {k for k in ours if ours[k] != official[k]} <= audio_io
    assert not any("caption_projection" in k for k in ours)
    text = _keys(ck, CONNECTORS + ("text_embedding_projection.",))  # compared whole with v1.2.0's below
    assert text["text_embedding_projection.video_aggregate_embed.weight"] == (64, 32 * 4)  # V2: one per stream
    assert text["text_embedding_projection.audio_aggregate_embed.weight"] == (32, 32 * 4)
    assert {k.split(".")[4] for k in text if ".transformer_1d_blocks." in k} == {str(i) for i in range(8)}


def test_tiny_23_vocoder_and_vae_are_the_v12_layouts(tiny23):
    fixtures = v12_fixture_sets()[0]
    ck = tiny23["checkpoint"]
    text = CONNECTORS + ("text_embedding_projection.",)  # 3 Gemma layers, 128 registers, per-stream widths there too
    assert _keys(ck, text) == _keys(fixtures / "connector_ltx23.safetensors", text)
    assert _keys(ck, ("vocoder.",)) == _keys(fixtures / "vocoder_bwe.safetensors", ("vocoder.",))  # BWE, 48 kHz
    ours, official = _keys(ck, ("vae.decoder.",)), _keys(fixtures / "video_vae_ltx23.safetensors", ("vae.decoder.",))
    assert set(ours) == set(official)  # the 2.3 up-blocks (widths: base 8 here, 4 there)


def test_tiny_23_is_deterministic_and_its_own_folder(tiny23, tmp_path, monkeypatch):
    again = ensure_tiny_model(tmp_path / "again", variant="tiny-2.3")
    for role, path in tiny23.items():
        if path.is_file():
            assert again[role].read_bytes() == path.read_bytes(), role
    monkeypatch.setenv("LTX2_TINY_DIR", str(tmp_path / "mine"))
    assert default_tiny_dir("tiny-2.3") == tmp_path / "mine-2.3" and default_tiny_dir() == tmp_path / "mine"
    two = ensure_tiny_model()  # the 2.0 one stays as it was, beside it
    assert read_header(two["checkpoint"]).metadata["model_version"] == "tiny-2.0"
    assert two["checkpoint"].read_bytes() != tiny23["checkpoint"].read_bytes()
    with pytest.raises(ValueError, match="no tiny model 'tiny-2.5'"):
        ensure_tiny_model(tmp_path / "x", variant="tiny-2.5")


def test_the_checkpoint_metadata_selects_the_23_defaults(tiny23):
    """30 LTX2Scheduler steps and STG on block 28 (the tiny model's last block) when the job leaves them out."""
    layout = LatentLayout.from_checkpoint(tiny23["checkpoint"])
    assert (layout.model_version, layout.num_layers) == ("tiny-2.3", 2)
    assert len(sigmas_for(Ltx2Schedule(steps=None), layout)) == 31
    assert stg_blocks(Guidance(), layout) == {"video": [1], "audio": [1]}
    assert len(sigmas_for(Ltx2Schedule(steps=None), LatentLayout.from_checkpoint(ensure_tiny_model()["checkpoint"]))) \
        == 41  # the 2.0 tiny model: 40


def _streaming_budget(job) -> int:
    """The smallest budget in which every stage fits, the transformer stages streamed (their cheapest way here:
    the distilled pipeline runs one pass per step, so streaming adds no stacked-pass activations)."""
    cheapest = plan_job(job, 1).plans
    return max(cheapest[s].estimate.total for s in cheapest)


def test_the_planner_streams_23_under_a_small_budget(tiny_root, monkeypatch):
    monkeypatch.setenv("LTX2_TINY_DIR", str(tiny_root))
    ensure_tiny_model(variant="tiny-2.3")
    job = parse_job(_job("distilled"))
    roomy = plan_job(job, 8 << 30).plans
    budget = _streaming_budget(job)
    plan = plan_job(job, budget)
    for name in ("denoise", "refine"):
        assert not roomy[name].choice["weights_mode"]["streaming"]
        assert roomy[name].estimate.total > budget  # resident does not fit: the planner picks streaming
        assert plan.plans[name].choice["weights_mode"] == {"precision": "bfloat16", "streaming": True}, name
    assert all(p.fits for p in plan.plans.values()), {n: p.note for n, p in plan.plans.items()}


# ----------------------------------------------------------------------------- renders

def _job(pipeline: str, **over) -> dict:
    job = {"pipeline": pipeline, "prompt": "a red fox in fresh snow, birdsong", "width": 128, "height": 128,
           "frames": 9, "fps": 24, "seed": 7, "model": "tiny-2.3", "memory_budget": "4GB"}
    if pipeline != "distilled":
        job["steps"] = 2
    job.update(over)
    return job


def _render(folder: Path, tiny_root: Path, job: dict) -> dict:
    """`ltx2 run` of ``job`` in ``folder``; returns its manifest, after checking the mp4."""
    folder.mkdir(parents=True, exist_ok=True)
    job = {**job, "output": str(folder / "out.mp4"), "work_dir": str(folder / "work"), "store": str(folder / "store")}
    (folder / "job.yaml").write_text(yaml.safe_dump(job))
    ltx2("run", str(folder / "job.yaml"), env={"LTX2_TINY_DIR": str(tiny_root)}, timeout=600)
    with av.open(str(folder / "out.mp4")) as c:
        video, audio = c.streams.video[0], c.streams.audio[0]
        assert (video.codec_context.width, video.codec_context.height) == (job["width"], job["height"])
        assert audio.codec_context.sample_rate == 48000 and audio.codec_context.channels == 2
        assert sum(1 for _ in c.decode(video=0)) == job["frames"]
    return json.loads((folder / "work" / "manifest.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("pipeline, stages", [
    ("distilled", ["text-encode", "denoise", "upscale", "refine", "decode", "vocode", "export", "preview"]),
    ("two-stage", ["text-encode", "denoise", "upscale", "refine", "decode", "vocode", "export", "preview"]),
    ("one-stage", ["text-encode", "denoise", "decode", "vocode", "export", "preview"]),
])
def test_every_pipeline_renders_23(tiny_root, tmp_path, pipeline, stages):
    manifest = _render(tmp_path, tiny_root, _job(pipeline))
    assert [s["name"] for s in manifest["stages"]] == stages
    assert all(s["status"] == "computed" for s in manifest["stages"])
    assert (tiny_root.with_name("tiny-2.3") / "tiny.json").is_file()  # made on first use, beside the 2.0 folder


@pytest.mark.slow
@pytest.mark.parametrize("bits", [8, 4])
def test_convert_23_and_render_from_the_converted_folder(tiny23, tiny_root, tmp_path, bits):
    out = tmp_path / f"q{bits}"
    ltx2("convert", "--checkpoint", str(tiny23["checkpoint"]), "--gemma", str(tiny23["gemma"]), "--out", str(out),
         "--bits", str(bits), "--group-size", "32")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest  # the roles the folder serves
    conv = read_header(out / "transformer.safetensors").metadata
    assert model_version(conv["model_version"]) is VERSIONS["2.3"]  # the version travels with the converted files
    model = {"checkpoint": str(tiny23["checkpoint"]), "gemma": str(tiny23["gemma"]),
             "spatial_upsampler": str(tiny23["spatial_upsampler"]), "distilled_lora": str(tiny23["distilled_lora"]),
             "converted": str(out)}
    ck = ltx2("weights", "check", *[str(p) for p in sorted(out.glob("*.safetensors"))], check=False)
    assert ck.returncode == 0, ck.stdout
    rendered = _render(tmp_path / "render", tiny_root, _job("distilled", model=model))
    labels = {s["name"]: s["choice_label"] for s in rendered["stages"] if s.get("choice_label")}
    assert labels["denoise"] == labels["refine"] == f"q{bits} g32", labels


@pytest.mark.slow
def test_a_streamed_23_render(tiny_root, tmp_path, monkeypatch):
    monkeypatch.setenv("LTX2_TINY_DIR", str(tiny_root))
    ensure_tiny_model(variant="tiny-2.3")
    job = _job("distilled")
    manifest = _render(tmp_path, tiny_root, {**job, "memory_budget": _streaming_budget(parse_job(job))})
    for s in manifest["stages"]:
        if s["name"] in ("denoise", "refine"):
            assert s["choice"]["weights_mode"]["streaming"] and "streamed" in s["choice_label"], s
