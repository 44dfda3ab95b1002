"""The HQ pipeline (res_2s, no STG, distilled LoRA in both stages) and the x1.5 spatial upsampler's geometry."""

from __future__ import annotations

from pathlib import Path

import pytest

from ltx2.orchestrator.graph import plan_stages
from ltx2.orchestrator.job import JobError, parse_job
from ltx2.spec.geometry import stage1_side, two_stage_side_step
from ltx2.spec.pipelines import HQ
from ltx2.spec.schedules import STAGE2_DISTILLED_SIGMAS
from ltx2.stages.contract import BadInput

TINY = Path("/nowhere/tiny")
X1_5 = Path(__file__).parents[1] / "fixtures" / "seed0" / "upsampler_x1_5_rational.safetensors"


def plan(**fields):
    job = parse_job({"prompt": "a fox", "width": 1536, "height": 1024, **fields}, base_dir=Path("/jobs"))
    return job, {s.name: s for s in plan_stages(job, tiny_dir=TINY)}


def test_hq_pipeline_graph_takes_the_official_hq_defaults() -> None:
    job, s = plan(pipeline="hq")
    assert list(s) == ["text-encode", "denoise", "upscale", "refine", "decode", "vocode", "export", "preview"]
    assert s["text-encode"].params.negative_prompt == job.negative_prompt  # guided: CFG needs the negative
    d = s["denoise"].params.key_material()
    assert (d["width"], d["height"]) == (768, 512)
    assert d["sampler"] == "res_2s" and d["schedule"] == {"kind": "ltx2", "steps": HQ.steps} and HQ.steps == 15
    v, a = d["guidance"]["video"], d["guidance"]["audio"]
    assert (v["cfg"], v["stg"], v["rescale"], v["modality"], v["stg_blocks"]) == (3.0, 0.0, 0.45, 3.0, [])
    assert (a["cfg"], a["stg"], a["rescale"], a["modality"], a["stg_blocks"]) == (7.0, 0.0, 1.0, 3.0, [])
    assert d["distilled_lora"] == {"strength": 0.25}
    assert set(s["denoise"].weights) == {"checkpoint", "distilled_lora"}
    r = s["refine"].params.key_material()
    assert r["sampler"] == "res_2s" and r["distilled_lora"] == {"strength": 0.5}
    assert r["schedule"]["sigmas"] == list(STAGE2_DISTILLED_SIGMAS)
    assert set(s["refine"].weights) == {"checkpoint", "distilled_lora"}
    assert s["upscale"].params.scale == 2.0


def test_other_pipelines_keep_euler_and_no_stage1_lora() -> None:
    for pipeline in ("distilled", "two-stage", "one-stage"):
        _, s = plan(pipeline=pipeline)
        assert s["denoise"].params.sampler == "euler" and s["denoise"].params.distilled_lora is None
        assert set(s["denoise"].weights) == {"checkpoint"}
        if "refine" in s:
            assert s["refine"].params.sampler == "euler"


def test_hq_keeps_the_fields_a_job_sets_and_its_steps() -> None:
    _, s = plan(pipeline="hq", steps=4, guidance={"video": {"cfg": 4.0}, "audio": {"stg": 1.0, "stg_blocks": [1]}})
    d = s["denoise"].params.key_material()
    assert d["schedule"]["steps"] == 4
    assert (d["guidance"]["video"]["cfg"], d["guidance"]["video"]["rescale"]) == (4.0, 0.45)
    assert (d["guidance"]["audio"]["stg"], d["guidance"]["audio"]["stg_blocks"]) == (1.0, [1])
    assert d["guidance"]["audio"]["rescale"] == 1.0


def test_hq_and_two_stage_keys_differ_from_denoise_on() -> None:
    from ltx2.orchestrator.graph import plan_keys

    def keys(pipeline):
        job = parse_job({"prompt": "a fox", "pipeline": pipeline, "steps": 3})
        return plan_keys(plan_stages(job, tiny_dir=TINY), identify=lambda p: str(p))

    hq, two = keys("hq"), keys("two-stage")
    assert hq["text-encode"] == two["text-encode"]  # the same prompts: shared
    assert all(hq[n] != two[n] for n in ("denoise", "upscale", "refine", "decode"))


def test_hq_needs_the_distilled_lora(tmp_path) -> None:
    from ltx2.models.tiny import ensure_tiny_model

    f = ensure_tiny_model()
    model = {"checkpoint": str(f["checkpoint"]), "gemma": str(f["gemma"]),
             "spatial_upsampler": str(f["spatial_upsampler"])}
    with pytest.raises(JobError, match="lacks distilled_lora, which pipeline hq needs"):
        parse_job({"prompt": "x", "pipeline": "hq", "model": model})


# ---------------------------------------------------------------------------------------- x1.5 geometry

def test_stage1_size_rule_follows_the_scale() -> None:
    assert (two_stage_side_step(2.0), two_stage_side_step(1.5)) == (64, 96)
    assert (stage1_side(1536, 2.0), stage1_side(1152, 1.5), stage1_side(768, 1.5)) == (768, 768, 512)
    with pytest.raises(ValueError, match="x2 or x1.5"):
        two_stage_side_step(4.0)


@pytest.fixture(scope="module")
def x15_model() -> dict:
    from ltx2.models.tiny import ensure_tiny_model

    f = ensure_tiny_model()
    return {"checkpoint": str(f["checkpoint"]), "gemma": str(f["gemma"]), "spatial_upsampler": str(X1_5),
            "distilled_lora": str(f["distilled_lora"])}


@pytest.mark.parametrize("pipeline", ["two-stage", "hq", "distilled"])
def test_x1_5_upsampler_renders_stage1_at_two_thirds(x15_model, pipeline) -> None:
    job = parse_job({"prompt": "x", "pipeline": pipeline, "width": 1152, "height": 768, "model": x15_model})
    assert job.spatial_scale == 1.5 and job.stage1_size == (768, 512)
    s = {st.name: st for st in plan_stages(job)}
    assert (s["denoise"].params.width, s["denoise"].params.height) == (768, 512)
    assert s["upscale"].params.scale == 1.5
    assert (s["refine"].params.width, s["refine"].params.height) == (1152, 768)


def test_x1_5_refuses_sizes_stage1_cannot_take(x15_model) -> None:
    with pytest.raises(JobError) as e:
        parse_job({"prompt": "x", "pipeline": "two-stage", "width": 1024, "height": 768, "model": x15_model})
    msg = str(e.value)
    assert "width: 1024 is not a positive multiple of 96" in msg and "2/3 of the size for the x1.5" in msg
    assert "use 960 or 1056" in msg and "height" not in msg
    # one-stage has no upscale: the upsampler's scale does not constrain it
    parse_job({"prompt": "x", "pipeline": "one-stage", "width": 1024, "height": 768, "model": x15_model})


def _ctx(scale: float, latents_shape=(1, 8, 2, 4, 6), facts=None):
    from types import SimpleNamespace

    from ltx2.stages.upscale import Params, STAGE

    class Lat:
        def shape(self, name):
            return latents_shape if name == "video" else (1, 8, 9, 16)

        facts = {"width": 192, "height": 128, "frame_count": 9, "fps": 24.0, "sigma": 0.0, "step": 3,
                 "total_steps": 3}

    return SimpleNamespace(params=Params(scale=scale), inputs={"latents": Lat()}, stage=STAGE,
                           weights={"spatial_upsampler": X1_5})


def test_upscale_predicts_the_x1_5_geometry_and_refuses_a_mismatched_file() -> None:
    from ltx2.stages.latent_upsample import check_upsampler, predict_upsampled

    p = predict_upsampled(_ctx(1.5), "spatial_upsampler")
    assert p.shapes["video"] == (1, 8, 2, 6, 9) and (p.facts["width"], p.facts["height"]) == (288, 192)
    assert predict_upsampled(_ctx(2.0), "spatial_upsampler").shapes["video"] == (1, 8, 2, 8, 12)
    check_upsampler(_ctx(1.5), "spatial_upsampler")
    with pytest.raises(BadInput, match="upscale x1.5, the stage was planned for x2"):
        check_upsampler(_ctx(2.0), "spatial_upsampler")
    from pydantic import ValidationError

    from ltx2.stages.upscale import Params
    with pytest.raises(ValidationError):
        Params(scale=3.0)
