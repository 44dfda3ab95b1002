"""The job's compute precision (``compute: auto | float32 | bfloat16 | float16``): resolved when the job is planned,
given to every stage that runs a network, in those stages' keys, shown by `ltx2 plan`, and counted by the memory
planner at its width (full-size LTX-2 19B / Gemma-3-12B files with synthesised headers, models/full_size.py)."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr

from ltx2.models.full_size import write_full_size_model
from ltx2.orchestrator.cache_keys import plan_keys
from ltx2.orchestrator.graph import plan_stages
from ltx2.orchestrator.job import JobError, load_job, parse_job
from ltx2.orchestrator.planner import plan_job
from ltx2.orchestrator.recipes import resolved_compute
from ltx2.stages.memory import weights_mode_choices

from support import EXAMPLE, ROOT, ltx2

GB = 1 << 30
NETWORK_STAGES = {"text-encode", "denoise", "upscale", "temporal-upscale", "refine", "decode", "vocode",
                  "image-encode", "video-encode", "audio-encode"}


def test_auto_is_bf16_on_a_gpu_and_float32_on_cpu(monkeypatch) -> None:
    import ltx2.models.precision as precision

    job = parse_job({"prompt": "a fox"})
    assert job.compute == "auto"
    monkeypatch.setattr(precision, "on_gpu", lambda: True)
    assert resolved_compute(job) == "bfloat16"
    monkeypatch.setattr(precision, "on_gpu", lambda: False)
    assert resolved_compute(job) == "float32"
    assert resolved_compute(parse_job({"prompt": "a fox", "compute": "float16"})) == "float16"


def test_a_bad_compute_is_refused_naming_the_field() -> None:
    with pytest.raises(JobError) as e:
        parse_job({"prompt": "a fox", "compute": "float64"})
    assert "compute" in str(e.value) and "float64" in str(e.value)


def _example(name: str, **fields) -> object:
    job = yaml.safe_load((ROOT / "examples" / name).read_text())
    return parse_job({**job, **fields}, base_dir=ROOT / "examples")


@pytest.mark.parametrize("compute", ["bfloat16", "float16"])
def test_every_stage_that_runs_a_network_gets_the_jobs_compute(compute) -> None:
    """Across the pipelines and the conditioning workflows, every planned stage whose parameters declare ``compute``
    (and only those: export, preview, soundtrack run none) receives the job's; together they are every network
    stage."""
    jobs = [_example("tiny.yaml", compute=compute, temporal_upscale=True),
            _example("tiny.yaml", compute=compute, pipeline="one-stage", width=96, height=64),
            _example("i2v.yaml", compute=compute), _example("ic-lora.yaml", compute=compute),
            _example("a2v.yaml", compute=compute), _example("retake.yaml", compute=compute)]
    seen = set()
    for job in jobs:
        for st in plan_stages(job):
            declared = "compute" in st.definition.params.model_fields
            assert declared == (st.stage in NETWORK_STAGES), st.stage
            if declared:
                assert st.params.compute == compute, (job.pipeline, st.name)
                seen.add(st.stage)
    assert seen == NETWORK_STAGES


def test_the_compute_precision_is_in_every_network_stages_key() -> None:
    f32 = plan_stages(_example("tiny.yaml", compute="float32"))
    bf16 = plan_stages(_example("tiny.yaml", compute="bfloat16"))
    k32, k16 = plan_keys(f32), plan_keys(bf16)
    for a, b in zip(f32, bf16):
        assert k32[a.name] != k16[b.name], a.name  # the networks' own parameter, or an input made at another width
        if a.stage in NETWORK_STAGES:
            assert a.params.key_material() == {**b.params.key_material(), "compute": "float32"}
    # a stage run by hand without it computes in float32: the planned float32 stage's key
    assert f32[0].definition.parse_params({"prompt": f32[0].params.prompt}).compute == "float32"


def test_plan_shows_the_compute_precision(tmp_path) -> None:
    job = yaml.safe_load(EXAMPLE.read_text())
    job.update(compute="bfloat16", output=str(tmp_path / "out.mp4"), work_dir=str(tmp_path / "work"))
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    out = " ".join(ltx2("plan", str(path), env={"COLUMNS": "250"}).stdout.split())
    assert "compute bfloat16" in out and "compute" in out and out.count("bfloat16") >= 7, out


def test_a_half_compute_never_offers_float32_weights() -> None:
    """A half compute holds every float weight at its width whatever the mode says: the float32 modes would be
    the bf16 ones at twice the estimate, so the planner does not offer them, even for a float32 file."""
    f32_file = ROOT / "tests" / "fixtures" / "seed0" / "transformer_ltx2.safetensors"
    ctx = types.SimpleNamespace(weights={"checkpoint": f32_file}, params=types.SimpleNamespace(compute="float32"))
    assert "float32" in {c[0]["weights_mode"]["precision"] for c in weights_mode_choices(ctx, "transformer")}
    ctx.params.compute = "bfloat16"
    assert "float32" not in {c[0]["weights_mode"]["precision"] for c in weights_mode_choices(ctx, "transformer")}


# ---------------------------------------------------------------------------------------- the 16 GB plan
@pytest.fixture(scope="module")
def full(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("full")
    files = write_full_size_model(folder / "weights")
    jobs = {}
    for compute in ("float32", "bfloat16"):
        job = {"pipeline": "two-stage", "prompt": "a red fox in the snow", "width": 768, "height": 512,
               "frames": 121, "model": {k: str(v) for k, v in files.items()}, "compute": compute,
               "work_dir": str(folder / f"work-{compute}"), "output": str(folder / f"out-{compute}.mp4")}
        jobs[compute] = folder / f"job-{compute}.yaml"
        jobs[compute].write_text(yaml.safe_dump(job))
    return jobs


def test_bf16_activations_keep_sampling_resident_on_a_16gb_machine(full):
    """768x512x121 two-stage with audio at 12.8 GiB (a 16 GB machine's default budget, physical less 20%): with
    float32 activations denoise and refine stream the transformer (+46 / +56 s per step); with bf16 activations
    (and weights held at that width) both keep the q4 transformer resident, and every stage still fits."""
    budget = int(12.8 * GB)
    f32, bf16 = (plan_job(load_job(full[c]), budget) for c in ("float32", "bfloat16"))
    assert not f32.refusals and not bf16.refusals
    for name in ("denoise", "refine"):
        assert f32.plans[name].choice["weights_mode"]["streaming"], name
        assert bf16.plans[name].choice["weights_mode"] == {"precision": "q4", "streaming": False, "group_size": 64}
        assert bf16.plans[name].stream_s_per_step is None and bf16.plans[name].total <= budget
    for name, p in f32.plans.items():  # every network's activations shrink; decode and upscale's weights halve
        h = bf16.plans[name]
        if name in NETWORK_STAGES:
            assert h.estimate.activations_bytes < p.estimate.activations_bytes, name
    for name in ("decode", "upscale"):
        assert 2 * bf16.plans[name].estimate.weights_bytes == f32.plans[name].estimate.weights_bytes


# ---------------------------------------------------------------------------------------- a bf16 render
@pytest.mark.slow
def test_a_bf16_render_writes_the_same_artifacts_close_to_the_float32_render(tmp_path) -> None:
    """examples/tiny.yaml rendered with compute bfloat16 and float32 (on CPU: MLX's bf16 kernels): every artifact
    keeps its float32 (uint8 for frames) dtype, and each lies within 0.1 (relative L2) of the float32 one. Measured:
    0.2-4%: the tiny networks' bf16 distances to float32 (parity/precision.py: 0.3-5% per network, the VAE decoder
    the largest) carried through the chain, the sampler's state kept float32."""
    base = yaml.safe_load(EXAMPLE.read_text())
    for compute in ("float32", "bfloat16"):
        job = {**base, "compute": compute, "output": str(tmp_path / f"{compute}.mp4"),
               "work_dir": str(tmp_path / compute)}
        (tmp_path / f"{compute}.yaml").write_text(yaml.safe_dump(job))
        ltx2("run", str(tmp_path / f"{compute}.yaml"), timeout=600)
    for artifact, array in (("text", "video_context"), ("stage1", "video"), ("stage1", "audio"),
                            ("upscaled", "video"), ("latents", "video"), ("latents", "audio"), ("frames", "video"),
                            ("audio", "waveform")):
        a = zarr.open(str(tmp_path / "bfloat16" / f"{artifact}.zarr"))[array][:]
        b = zarr.open(str(tmp_path / "float32" / f"{artifact}.zarr"))[array][:]
        assert a.dtype == b.dtype == (np.uint8 if artifact == "frames" else np.float32), (artifact, array)
        a, b = a.astype(np.float64), b.astype(np.float64)
        assert np.linalg.norm(a - b) / np.linalg.norm(b) < 0.1, (artifact, array)
    assert (tmp_path / "bfloat16.mp4").stat().st_size > 0
