"""End to end on the tiny model: the HQ pipeline, and a two-stage render through the x1.5 rational upsampler."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ltx2.artifacts_schema import open_artifact

from support import EXAMPLE, ltx2

pytestmark = pytest.mark.slow

X1_5 = Path(__file__).parents[1] / "fixtures" / "seed0" / "upsampler_x1_5_rational.safetensors"


def _job(folder: Path, **changes) -> Path:
    job = yaml.safe_load(EXAMPLE.read_text())
    job.pop("guidance")
    job.update(output=str(folder / "out.mp4"), work_dir=str(folder / "work"), **changes)
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


@pytest.mark.parametrize("model", ["tiny", "tiny-2.3"])
def test_hq_tiny_render(tmp_path, model):
    ltx2("run", str(_job(tmp_path, pipeline="hq", steps=2, model=model)))
    assert (tmp_path / "out.mp4").stat().st_size > 0
    stage1 = open_artifact(tmp_path / "work" / "stage1.zarr")
    # res_2s walks 2 steps + the final x0 at sigma 0.0011: 3 checkpointed steps
    assert stage1.facts["total_steps"] == 3
    latents = open_artifact(tmp_path / "work" / "latents.zarr")
    assert latents.facts["total_steps"] == 4 and (latents.facts["width"], latents.facts["height"]) == (192, 128)


def test_two_stage_render_through_the_x1_5_upsampler(tmp_path):
    from ltx2.models.tiny import ensure_tiny_model

    f = ensure_tiny_model()
    model = {"checkpoint": str(f["checkpoint"]), "gemma": str(f["gemma"]), "spatial_upsampler": str(X1_5),
             "distilled_lora": str(f["distilled_lora"])}
    ltx2("run", str(_job(tmp_path, pipeline="two-stage", width=192, height=96, model=model)))
    work = tmp_path / "work"
    s1, up = open_artifact(work / "stage1.zarr"), open_artifact(work / "upscaled.zarr")
    assert (s1.facts["width"], s1.facts["height"]) == (128, 64)  # 2/3 of the target
    assert s1.shape("video")[3:] == (2, 4) and up.shape("video")[3:] == (3, 6)
    assert (up.facts["width"], up.facts["height"]) == (192, 96)
    assert (tmp_path / "out.mp4").stat().st_size > 0
