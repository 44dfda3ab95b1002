"""The stage graph: what each pipeline runs, at which size, on which weights, in which order."""

from __future__ import annotations

from pathlib import Path

import pytest

from ltx2.orchestrator.graph import plan_stages, resolve_tiling
from ltx2.orchestrator.job import parse_job
from ltx2.orchestrator.recipes import resolved_compute
from ltx2.spec.schedules import DISTILLED_SIGMAS as DISTILLED_STAGE1_SIGMAS
from ltx2.spec.schedules import STAGE2_DISTILLED_SIGMAS as DISTILLED_STAGE2_SIGMAS
from ltx2.stages.params import Tiles
from ltx2.stages.registry import stage_names

TINY = Path("/nowhere/tiny")  # planning needs no weight file to exist


class _Planned:
    """A planned stage whose params read as their canonical (cache-key) dump."""

    def __init__(self, stage):
        self.stage, self.params = stage, stage.params.key_material()

    def __getattr__(self, name):
        return getattr(self.stage, name)


def plan(**fields):
    job = parse_job({"prompt": "a fox", "width": 1536, "height": 1024, **fields}, base_dir=Path("/jobs"))
    return job, {s.name: _Planned(s) for s in plan_stages(job, tiny_dir=TINY)}


def test_every_stage_has_a_version_and_producers_come_first() -> None:
    for pipeline in ("distilled", "two-stage", "one-stage"):
        job, stages = plan(pipeline=pipeline)
        produced: set[str] = set()
        for s in plan_stages(job, tiny_dir=TINY):
            assert s.name in stage_names() and s.version >= 1
            assert set(s.inputs) <= produced, (pipeline, s.name)
            produced.add(s.output)


def test_distilled_pipeline() -> None:
    job, s = plan(pipeline="distilled")
    assert list(s) == ["text-encode", "denoise", "upscale", "refine", "decode", "vocode", "export", "preview"]
    # no CFG: no negative; the weights mode is the planner's to set (float32, resident until it does)
    assert s["text-encode"].params == {"prompt": "a fox", "negative_prompt": None,
                                       "weights_mode": {"precision": "float32", "streaming": False},
                                       "compute": resolved_compute(job)}
    d = s["denoise"].params
    assert (d["width"], d["height"], d["guidance"]) == (768, 512, None)
    assert d["schedule"] == {"kind": "fixed", "sigmas": list(DISTILLED_STAGE1_SIGMAS)}
    assert len(DISTILLED_STAGE1_SIGMAS) == 9 and len(DISTILLED_STAGE2_SIGMAS) == 4
    r = s["refine"]
    assert (r.params["width"], r.params["height"]) == (1536, 1024)
    assert r.params["schedule"]["sigmas"] == list(DISTILLED_STAGE2_SIGMAS) and r.params["distilled_lora"] is None
    assert set(r.weights) == {"checkpoint"}
    assert r.inputs == ("upscaled.zarr", "text.zarr")
    assert s["decode"].inputs == ("latents.zarr",) and s["vocode"].inputs == ("latents.zarr",)
    assert set(s["upscale"].weights) == {"spatial_upsampler", "checkpoint"}
    assert s["export"].inputs == ("frames.zarr", "audio.zarr")
    assert s["export"].output == str(Path("/jobs/output.mp4"))
    assert s["preview"].inputs == ("frames.zarr", "audio.zarr")
    assert s["preview"].output == str(Path("/jobs/output.preview.png"))


def test_two_stage_pipeline() -> None:
    job, s = plan(pipeline="two-stage", steps=20, guidance={"video": {"stg_blocks": [3]}})
    assert list(s) == ["text-encode", "denoise", "upscale", "refine", "decode", "vocode", "export", "preview"]
    assert s["text-encode"].params["negative_prompt"] == job.negative_prompt
    d = s["denoise"].params
    assert (d["width"], d["height"], d["schedule"]) == (768, 512, {"kind": "ltx2", "steps": 20})
    assert d["guidance"]["video"]["cfg"] == 3.0 and d["guidance"]["video"]["stg_blocks"] == [3]
    assert d["guidance"]["audio"]["cfg"] == 7.0
    r = s["refine"]
    assert set(r.weights) == {"checkpoint", "distilled_lora"}
    assert r.params["distilled_lora"] == {"strength": 1.0}
    assert r.params["schedule"]["sigmas"] == list(DISTILLED_STAGE2_SIGMAS)


def test_one_stage_pipeline_decodes_stage1() -> None:
    job, s = plan(pipeline="one-stage", width=736, height=480)
    assert list(s) == ["text-encode", "denoise", "decode", "vocode", "export", "preview"]
    assert (s["denoise"].params["width"], s["denoise"].params["height"]) == (736, 480)
    assert s["decode"].inputs == ("stage1.zarr",) and s["vocode"].inputs == ("stage1.zarr",)
    # left to the checkpoint (its version's official count and block: spec.versions), resolved by the stage
    assert s["denoise"].params["schedule"] == {"kind": "ltx2", "steps": None}
    assert s["denoise"].params["guidance"]["audio"]["stg_blocks"] is None


def test_stages_read_only_their_weights() -> None:
    job, s = plan(pipeline="two-stage")
    assert set(s["text-encode"].weights) == {"gemma", "checkpoint"}
    assert set(s["denoise"].weights) == {"checkpoint"}
    assert s["export"].weights == {}
    assert s["denoise"].weights["checkpoint"] == TINY / "ltx2-tiny.safetensors"


@pytest.mark.parametrize("tiling, width, height, frames, expected", [
    ("off", 1536, 1024, 121, None),
    ("auto", 1536, 1024, 121, {"spatial_tile": 512, "spatial_overlap": 64, "temporal_tile": 64,
                               "temporal_overlap": 24}),
    ("auto", 512, 512, 121, {"temporal_tile": 64, "temporal_overlap": 24}),  # one spatial tile covers it
    ("auto", 1536, 1024, 57, {"spatial_tile": 512, "spatial_overlap": 64}),
    ("auto", 192, 128, 9, None),
    ({"spatial_tile": 256, "spatial_overlap": 32, "temporal_tile": None}, 1536, 1024, 121,
     {"spatial_tile": 256, "spatial_overlap": 32}),
])
def test_decode_tiling_is_resolved_in_the_plan(tiling, width, height, frames, expected) -> None:
    job = parse_job({"prompt": "x", "tiling": tiling, "width": width, "height": height, "frames": frames})
    assert resolve_tiling(job) == expected
    decode = next(s for s in plan_stages(job, tiny_dir=TINY) if s.name == "decode")
    assert decode.params.tiling == (None if expected is None else Tiles(**expected))


def test_preview_can_be_turned_off() -> None:
    job = parse_job({"prompt": "x", "preview": False})
    assert "preview" not in [s.name for s in plan_stages(job, tiny_dir=TINY)]


def test_guidance_defaults_are_the_model_versions() -> None:
    from ltx2.spec.versions import DEFAULT_VERSION
    from ltx2.stages.sampling import AUDIO_GUIDER_DEFAULTS, VIDEO_GUIDER_DEFAULTS

    job = parse_job({"prompt": "x", "pipeline": "two-stage"})
    for ours, theirs, spec in ((job.guidance.video, VIDEO_GUIDER_DEFAULTS, DEFAULT_VERSION.video_guidance),
                               (job.guidance.audio, AUDIO_GUIDER_DEFAULTS, DEFAULT_VERSION.audio_guidance)):
        assert (ours.cfg, ours.stg, ours.rescale, ours.modality) == (spec.cfg, spec.stg, spec.rescale, spec.modality)
        assert (theirs.cfg_scale, theirs.stg_scale, theirs.rescale_scale, theirs.modality_scale) == \
               (spec.cfg, spec.stg, spec.rescale, spec.modality)
    assert (spec.cfg, spec.stg, spec.rescale, spec.modality) == (7.0, 1.0, 0.7, 3.0)  # the official audio defaults
