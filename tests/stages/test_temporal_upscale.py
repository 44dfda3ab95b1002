"""temporal_upscale: the temporal x2 latent upscaler after the spatial one, end to end on the tiny model.

N frames at fps -> 2N-1 frames at 2*fps (F latent frames -> 2F-1), refine at the new rate, the audio latent
carried through. What is tested here is the wiring (job rules, graph, stage, artifacts, mp4), not the
network: its parity with the reference is tests/models/test_parity.py (fixture upsampler_temporal_x2).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import av
import mlx.core as mx
import numpy as np
import pytest

from ltx2.artifacts_schema import open_artifact
from ltx2.models.tiny import MANIFEST, ensure_tiny_model, is_current
from ltx2.models.weights import identify as ident
from ltx2.orchestrator.graph import plan_stages, resolve_tiling
from ltx2.orchestrator.recipes import RECIPES, Expand
from ltx2.orchestrator.job import JobError, parse_job
from ltx2.stages.registry import readers_of, stage_def

from support import ltx2
from test_pipeline import clone, statuses, write_job

SEED0 = Path(__file__).parents[1] / "fixtures" / "seed0"
FRAMES, FPS = 9, 24.0  # examples/tiny.yaml: two-stage, 192x128, 9 frames at 24 fps


@pytest.fixture(scope="module")
def tiny() -> dict[str, Path]:
    return ensure_tiny_model()  # the folder the rendering subprocesses use


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, tiny) -> Path:
    folder = tmp_path_factory.mktemp("temporal")
    ltx2("run", str(write_job(folder, temporal_upscale=True)))
    return folder


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, rendered) -> Path:
    """The same job without temporal_upscale, from the same work folder (its shared stages are reused)."""
    folder = tmp_path_factory.mktemp("baseline")
    ltx2("run", str(clone(rendered, folder, temporal_upscale=False)))
    return folder


def _mp4(path: Path) -> dict:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        times = [float(f.pts * f.time_base) for f in c.decode(video=0)]
        rate = float(v.average_rate)
    with av.open(str(path)) as c:
        samples = sum(f.samples for f in c.decode(audio=0))
        audio_rate = c.streams.audio[0].rate
    return {"frames": len(times), "fps": rate, "last": times[-1], "samples": samples, "audio_rate": audio_rate}


# ============================================================================ the render
@pytest.mark.slow
def test_run_doubles_the_frame_rate_over_the_same_time(rendered, baseline):
    t2, base = _mp4(rendered / "out.mp4"), _mp4(baseline / "out.mp4")
    assert (t2["frames"], t2["fps"]) == (2 * FRAMES - 1, 2 * FPS) == (17, 48.0)
    assert (base["frames"], base["fps"]) == (FRAMES, FPS)
    # the same first and last frame times (0 and (N-1)/fps = (2N-2)/(2 fps)) and the same audio
    assert t2["last"] == pytest.approx(base["last"], abs=1e-6) and base["last"] == pytest.approx((FRAMES - 1) / FPS)
    assert t2["samples"] > 0 and t2["samples"] == base["samples"] and t2["audio_rate"] == base["audio_rate"]
    st = statuses(rendered)
    assert list(st) == ["text-encode", "denoise", "upscale", "temporal-upscale", "refine", "decode", "vocode",
                        "export", "preview"]
    assert set(st.values()) == {"computed"}
    # switching it off reuses what does not depend on it: temporal_upscale changes no upstream key
    b = statuses(baseline)
    assert "temporal-upscale" not in b
    assert {n for n, s in b.items() if s == "reused"} == {"text-encode", "denoise", "upscale"}


@pytest.mark.slow
def test_latents_between_stages_have_2f_minus_1_frames(rendered):
    work = rendered / "work"
    up, t2 = open_artifact(work / "upscaled.zarr"), open_artifact(work / "upscaled_t2.zarr", verify=True)
    refined, frames = open_artifact(work / "latents.zarr"), open_artifact(work / "frames.zarr")
    b, c, f, h, w = up.shape("video")
    assert f == (FRAMES - 1) // 8 + 1 == 2
    assert t2.shape("video") == (b, c, 2 * f - 1, h, w) == refined.shape("video")
    assert t2.facts["frame_count"] == 8 * (2 * f - 2) + 1 == 2 * FRAMES - 1
    assert (t2.facts["fps"], t2.facts["width"], t2.facts["height"]) == (2 * FPS, up.facts["width"], up.facts["height"])
    assert (refined.facts["frame_count"], refined.facts["fps"]) == (17, 48.0)
    assert frames.shape("video") == (17, 128, 192, 3) and frames.facts["fps"] == 48.0
    # the audio latent is carried through unchanged (same duration)
    np.testing.assert_array_equal(t2.read_numpy("audio"), up.read_numpy("audio"))
    assert t2.shape("audio") == refined.shape("audio")


@pytest.mark.slow
def test_stage_output_is_the_upsampler_applied_to_its_input(rendered, tiny):
    """Un-normalise with the checkpoint's statistics, run the temporal network, normalise: what the stage wrote."""
    from ltx2.models.upsampler import load_latent_statistics, load_upsampler

    work = rendered / "work"
    x = mx.array(open_artifact(work / "upscaled.zarr").read_numpy("video"))
    stats = load_latent_statistics(tiny["checkpoint"])
    mean, std = stats.mean.reshape(1, -1, 1, 1, 1), stats.std.reshape(1, -1, 1, 1, 1)
    net = load_upsampler(tiny["temporal_upsampler"])
    up = net((x * std + mean).transpose(0, 2, 3, 4, 1)).transpose(0, 4, 1, 2, 3)
    expected = np.array((up - mean) / std)
    got = open_artifact(work / "upscaled_t2.zarr").read_numpy("video")
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(got[:, :, ::2], open_artifact(work / "upscaled.zarr").read_numpy("video"), atol=1e-2)


@pytest.mark.slow
def test_stage_by_hand_writes_what_the_run_wrote(rendered, tmp_path):
    work = rendered / "work"
    ltx2("stage", "temporal-upscale", "--in", str(work / "upscaled.zarr"), "--out", str(tmp_path / "t2.zarr"))
    mine, ref = open_artifact(tmp_path / "t2.zarr", "latents", verify=True), open_artifact(work / "upscaled_t2.zarr")
    for name in ("video", "audio"):
        np.testing.assert_array_equal(mine.read_numpy(name), ref.read_numpy(name))
    assert mine.facts == ref.facts
    assert mine.cache_key == ref.cache_key  # by hand, the key the orchestrator computed


@pytest.mark.slow
def test_stage_refuses_a_text_artifact_and_a_spatial_upsampler(rendered, tiny, tmp_path):
    work = rendered / "work"
    r = ltx2("stage", "temporal-upscale", "--in", str(work / "text.zarr"), "--out", str(tmp_path / "a.zarr"),
             check=False)
    assert r.returncode == 2 and "text artifact" in r.stderr and "latents" in r.stderr, r.stderr
    r = ltx2("stage", "temporal-upscale", "--in", str(work / "upscaled.zarr"), "--out", str(tmp_path / "b.zarr"),
             "--weights", f"temporal_upsampler={tiny['spatial_upsampler']}", check=False)
    msg = " ".join(r.stderr.split())
    assert r.returncode == 2, r.stderr
    assert str(tiny["spatial_upsampler"]) in msg and "is a latent upsampler, spatial x2" in msg, msg
    assert "ltx-2-temporal-upscaler-x2-1.0.safetensors" in msg and "--weights temporal_upsampler=PATH" in msg, msg
    r = ltx2("stage", "temporal-upscale", "--in", str(work / "upscaled.zarr"), "--out", str(tmp_path / "c.zarr"),
             "--weights", f"temporal_upsampler={tiny['checkpoint']}", check=False)
    assert r.returncode == 2 and "is an LTX-2 single-file checkpoint" in r.stderr, r.stderr
    assert not [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")]  # refused before writing


@pytest.mark.slow
def test_plan_knows_the_stage_and_finds_it_cached(rendered):
    out = " ".join(ltx2("plan", str(rendered / "job.yaml")).stdout.split())
    assert "temporal-upscale" in out and "upscaled_t2.zarr" in out and "9 -> 17 at 48 fps" in out, out
    assert "0 of 9 stages will run" in out, out


# ============================================================================ graph and job rules
def _job(**fields):
    return parse_job({"prompt": "a fox", "width": 192, "height": 128, "frames": FRAMES, "fps": FPS, **fields},
                     base_dir=Path("/jobs"))


@pytest.mark.parametrize("pipeline", ["distilled", "two-stage"])
def test_graph_puts_temporal_upscale_between_upscale_and_refine(pipeline):
    job = _job(pipeline=pipeline, temporal_upscale=True)
    s = {st.name: st for st in plan_stages(job, tiny_dir=Path("/nowhere"))}
    assert list(s) == ["text-encode", "denoise", "upscale", "temporal-upscale", "refine", "decode", "vocode", "export",
                     "preview"]
    t = s["temporal-upscale"]
    assert (t.inputs, t.output) == (("upscaled.zarr",), "upscaled_t2.zarr")
    assert t.weights == {"temporal_upsampler": Path("/nowhere/ltx2-tiny-temporal-upscaler-x2.safetensors"),
                         "checkpoint": Path("/nowhere/ltx2-tiny.safetensors")}
    assert s["refine"].inputs == ("upscaled_t2.zarr", "text.zarr")
    assert (s["refine"].params.frames, s["refine"].params.fps) == (17, 48.0)
    assert (s["denoise"].params.frames, s["denoise"].params.fps) == (9, 24.0)  # stage 1 unchanged
    assert stage_def("temporal-upscale").output_name == "upscaled_t2.zarr"
    order = [n.stage for n in RECIPES["two-stage"] if not isinstance(n, Expand)]
    assert order.index("upscale") < order.index("temporal-upscale") < order.index("refine")
    off = {st.name: st for st in plan_stages(_job(pipeline=pipeline), tiny_dir=Path("/nowhere"))}
    assert "temporal-upscale" not in off and off["refine"].inputs == ("upscaled.zarr", "text.zarr")


def test_decode_tiling_counts_the_output_frames():
    # 33 frames fit one 64-frame tile; 65 (33 doubled) do not
    assert resolve_tiling(_job(frames=33)) is None
    assert resolve_tiling(_job(frames=33, temporal_upscale=True)) == {"temporal_tile": 64, "temporal_overlap": 24}


def _problems(data: dict) -> list[str]:
    with pytest.raises(JobError) as e:
        parse_job({"prompt": "a fox", **data})
    return e.value.problems


def _model(tiny, **over) -> dict:
    m = {k: str(tiny[k]) for k in ("checkpoint", "gemma", "spatial_upsampler", "distilled_lora")}
    m.update({k: str(v) for k, v in over.items()})
    return m


def test_one_stage_refuses_temporal_upscale():
    found = _problems({"pipeline": "one-stage", "temporal_upscale": True})
    assert found == ["temporal_upscale: True does not apply to pipeline one-stage (it has no refine stage to clean up "
                     "the temporal upscaler's output); remove temporal_upscale, or use pipeline distilled or "
                     "two-stage"]
    assert _job(pipeline="one-stage", temporal_upscale=False).temporal_upscale is False


def test_model_files_need_a_temporal_upsampler(tiny):
    found = _problems({"pipeline": "two-stage", "temporal_upscale": True, "model": _model(tiny)})
    assert len(found) == 1 and found[0].startswith("temporal_upscale: True needs the temporal x2 latent upscaler, "
                                                   "but model has no temporal_upsampler"), found
    assert "add temporal_upsampler: PATH" in found[0]
    job = parse_job({"prompt": "a fox", "pipeline": "two-stage", "temporal_upscale": True,
                     "model": _model(tiny, temporal_upsampler=tiny["temporal_upsampler"])})
    s = {st.name: st for st in plan_stages(job)}
    assert s["temporal-upscale"].weights["temporal_upsampler"] == tiny["temporal_upsampler"]
    assert job.weight_files()["temporal_upsampler"] == tiny["temporal_upsampler"]


@pytest.mark.parametrize("wrong, expected", [
    ("spatial_upsampler", "is a latent upsampler, spatial x2, not the temporal x2 latent upscaler; give the path of "
                          "the temporal x2 latent upscaler (ltx-2-temporal-upscaler-x2-1.0.safetensors); this file "
                          "belongs under spatial_upsampler"),
    ("checkpoint", "is an LTX-2 single-file checkpoint"),
])
def test_a_wrong_file_in_the_temporal_slot_is_refused(tiny, wrong, expected):
    found = _problems({"pipeline": "distilled", "temporal_upscale": True,
                       "model": _model(tiny, temporal_upsampler=tiny[wrong])})
    assert found[0].startswith(f"model.temporal_upsampler: '{tiny[wrong]}' {expected}"), found


def test_the_official_temporal_layout_fits_only_the_temporal_slot(tiny):
    for path in (SEED0 / "upsampler_temporal_x2.safetensors", tiny["temporal_upsampler"]):
        rep = ident.identify(path, readers=readers_of)
        assert rep.info["slot"] == "temporal_upsampler" and rep.parts[0].readers == ("temporal-upscale",)
        assert ident.slot_problem(path, "temporal_upsampler", readers=readers_of) is None
        what, fix = ident.slot_problem(path, "spatial_upsampler", readers=readers_of)
        assert "temporal x2" in what and fix.endswith("this file belongs under temporal_upsampler")
    assert ident.slot_problem(tiny["spatial_upsampler"], "spatial_upsampler", readers=readers_of) is None
    assert ident.identify(tiny["spatial_upsampler"], readers=readers_of).parts[0].readers == ("upscale",)


# ============================================================================ the tiny model
def test_tiny_temporal_upsampler_is_in_the_official_layout(tiny):
    from ltx2.models.upsampler import load_upsampler
    from ltx2.models.weights import read_header

    cfg = read_header(tiny["temporal_upsampler"]).config()
    official = read_header(SEED0 / "upsampler_temporal_x2.safetensors").config()
    assert {k: cfg[k] for k in official if k not in ("in_channels", "mid_channels", "num_blocks_per_stage")} == \
        {k: v for k, v in official.items() if k not in ("in_channels", "mid_channels", "num_blocks_per_stage")}
    net = load_upsampler(tiny["temporal_upsampler"])
    out = net(mx.random.normal((1, 3, 4, 6, cfg["in_channels"]), key=mx.random.key(0)))
    assert out.shape == (1, 5, 4, 6, cfg["in_channels"])


def test_a_tiny_folder_made_before_the_temporal_upsampler_gets_it(tiny, tmp_path):
    root = tmp_path / "model"
    files = ensure_tiny_model(root)
    digest = files["temporal_upsampler"].read_bytes()
    # what the previous generator left: the same manifest version, no temporal upsampler
    files["temporal_upsampler"].unlink()
    manifest = json.loads((root / MANIFEST).read_text())
    del manifest["files"][files["temporal_upsampler"].name]
    (root / MANIFEST).write_text(json.dumps(manifest))
    assert not is_current(root)
    assert ensure_tiny_model(root) == files and is_current(root)
    assert files["temporal_upsampler"].read_bytes() == digest
    assert files["temporal_upsampler"].read_bytes() == tiny["temporal_upsampler"].read_bytes()
    shutil.rmtree(root)
