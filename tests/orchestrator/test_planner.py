"""The memory planner and `ltx2 plan` on FULL-SIZE LTX-2 19B / Gemma-3-12B files, and its run integration.

The full-size files are synthesised (models/full_size.py): real key names and shapes from the networks
built at the real configs, a real header, and a SPARSE body of the real length (no disk used), marked
``ltx2_synthetic: header-only``. The planner reads headers only, so it plans them exactly as it would
plan the downloaded files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from ltx2.models.full_size import write_full_size_model
from ltx2.models.weights import read_header
from ltx2.orchestrator.cache_keys import plan_keys
from ltx2.orchestrator.job import load_job
from ltx2.orchestrator.planner import plan_job

GB = 1 << 30
ROOT = Path(__file__).resolve().parents[2]


def ltx2(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """`ltx2 ...` in a subprocess (what starts stage processes)."""
    r = subprocess.run([sys.executable, "-m", "ltx2.cli.main", *args], capture_output=True, text=True,
                       env={**os.environ, "COLUMNS": "250"}, timeout=300)
    if check and r.returncode != 0:
        raise AssertionError(f"ltx2 {' '.join(args)} exited {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


def cli(*args: str, code: int = 0):
    """`ltx2 plan` / a refused `ltx2 run` in this process (no stage process starts)."""
    from typer.testing import CliRunner

    from ltx2.cli.main import app

    r = CliRunner().invoke(app, list(args), terminal_width=250)
    assert r.exit_code == code, (r.exit_code, r.output, r.exception)
    return r


@pytest.fixture(scope="module")
def full(tmp_path_factory) -> Path:
    """A two-stage 768x512x121 job naming header-only full-size files; returns the job file."""
    folder = tmp_path_factory.mktemp("full")
    files = write_full_size_model(folder / "weights")
    job = {"pipeline": "two-stage", "prompt": "a red fox in the snow", "width": 768, "height": 512, "frames": 121,
           "model": {k: str(v) for k, v in files.items()}, "memory_budget": "16GB",
           "work_dir": str(folder / "work"), "output": str(folder / "out.mp4"),
           "compute": "float32"}  # the figures below are float32 activations' (auto: bf16 on a GPU; test_compute.py)
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def test_synthetic_files_are_full_size_sparse_and_marked(full):
    job = load_job(full)
    ckpt = job.model.checkpoint
    h = read_header(ckpt)
    assert h.metadata["ltx2_synthetic"] == "header-only"
    assert ckpt.stat().st_size > 40 * GB and ckpt.stat().st_blocks * 512 < 16 << 20  # 43 GB long, no disk
    assert not h.truncated()  # the body has its full length: nothing reads as truncated
    n = sum(int(np.prod(t.shape)) for k, t in h.tensors.items() if k.startswith("model.diffusion_model.transformer_blocks."))
    assert 18.4e9 < n < 18.7e9 and h.tensors["model.diffusion_model.transformer_blocks.47.ff.net.0.proj.weight"].shape \
        == (16384, 4096)
    g = json.loads((job.model.gemma / "model.safetensors.index.json").read_text())["weight_map"]
    assert "language_model.model.layers.47.mlp.down_proj.weight" in g and len(set(g.values())) == 5


def test_plan_at_16gb_fits_every_stage(full):
    jp = plan_job(load_job(full), 16 * GB)
    assert not jp.refusals
    p = jp.plans
    # both sampling stages fit with the 12 GiB q4 transformer resident (stage 1 one guided pass at a time,
    # stage 2's 6144 tokens one attention chunk at a time); the official files are bf16: never float32
    q4 = {"weights_mode": {"precision": "q4", "streaming": False, "group_size": 64}}
    assert p["denoise"].choice == q4 and p["refine"].choice == q4
    assert p["text-encode"].choice["weights_mode"]["precision"] in ("q8", "q4")
    assert not any(sp.choice.get("weights_mode", {}).get("precision") == "float32" for sp in p.values())
    assert p["decode"].choice == {"tiling": {"spatial_tile": 512, "spatial_overlap": 64, "temporal_tile": 64,
                                             "temporal_overlap": 24}}  # auto: the official tiling, as it fits
    for name, sp in p.items():
        assert name == "export" or sp.total <= 16 * GB, name
    # the choice is in the stage's params, hence in its key
    stages = {s.name: s for s in jp.stages}
    assert stages["denoise"].params.weights_mode["precision"] == "q4"
    r = cli("plan", str(full), "--budget", "16GB")
    assert "q4 g64" in r.output and "no:" not in r.output and "tiles 512 px/64 x 64 f/24" in r.output


@pytest.fixture(scope="module")
def full23(tmp_path_factory) -> Path:
    """The same two-stage 768x512x121 job with audio on header-only full-size LTX-2.3 (22B) files."""
    folder = tmp_path_factory.mktemp("full23")
    files = write_full_size_model(folder / "weights", version="2.3")
    job = {"pipeline": "two-stage", "prompt": "a red fox in the snow, birdsong", "width": 768, "height": 512,
           "frames": 121, "model": {k: str(v) for k, v in files.items()}, "memory_budget": "16GB",
           "work_dir": str(folder / "work"), "output": str(folder / "out.mp4"), "compute": "float32"}
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def test_full_size_23_files_are_the_22b_layout(full23):
    from ltx2.models.weights.identify import identify
    from ltx2.stages.registry import readers_of

    job = load_job(full23)
    h = read_header(job.model.checkpoint)
    assert h.metadata["model_version"] == "2.3.0"
    n = sum(int(np.prod(t.shape)) for k, t in h.tensors.items()
            if k.startswith(("model.diffusion_model.", "text_embedding_projection.")))
    assert 21.9e9 < n < 22.4e9  # transformer, 8-layer gated connectors at 4096 / 2048, V2 feature extractor
    assert h.tensors["text_embedding_projection.video_aggregate_embed.weight"].shape == (4096, 3840 * 49)
    assert h.tensors["model.diffusion_model.transformer_blocks.47.attn1.to_gate_logits.weight"].shape == (32, 4096)
    rep = identify(job.model.checkpoint, readers=readers_of)
    assert rep.ok and rep.info["short"] == "LTX-2.3 single-file checkpoint (dev)", rep.problems
    assert identify(job.model.spatial_upsampler, readers=readers_of).title == \
        "latent upsampler, spatial x2 (LTX-2.3, v1.1)"


def test_plan_23_at_16gb_fits_every_stage(full23):
    """`ltx2 plan` of a two-stage 2.3 768x512x121 render with audio fits the 16 GB default budget, every stage."""
    jp = plan_job(load_job(full23), 16 * GB)
    assert not jp.refusals and not jp.bad_inputs
    for name, sp in jp.plans.items():
        assert sp.fits and sp.estimate is not None and (name == "export" or sp.total <= 16 * GB), (name, sp.note)
    p = jp.plans
    assert not any(sp.choice.get("weights_mode", {}).get("precision") == "float32" for sp in p.values())
    assert p["denoise"].choice["weights_mode"]["precision"] in ("q8", "q4")
    r = cli("plan", str(full23), "--budget", "16GB")
    out = " ".join(r.output.split())
    assert "8 of 8 stages will run" in out and "no:" not in out and "does not fit" not in out, out


def test_plan_at_12gb_streams_and_shows_the_cost(full):
    jp = plan_job(load_job(full), 12 * GB)
    assert not jp.refusals
    for name in ("denoise", "refine"):
        sp = jp.plans[name]
        assert sp.choice["weights_mode"]["streaming"] and sp.total <= 12 * GB
        assert sp.stream_bytes_per_pass > 30 * GB and sp.stream_s_per_step > 0 and not sp.stream_measured
    r = cli("plan", str(full), "--budget", "12GB")
    assert "streamed" in r.output and "s/step (est." in r.output


def test_plan_at_2gb_refuses_naming_what_is_needed(full):
    jp = plan_job(load_job(full), 2 * GB)
    refused = {p.name: p for p in jp.refusals}
    assert {"text-encode", "denoise", "refine", "decode"} <= set(refused)
    for p in refused.values():
        assert p.need > 2 * GB and "memory_budget >=" in p.note
    assert refused["denoise"].choice["weights_mode"]["streaming"]  # the cheapest way was tried
    r = cli("plan", str(full), "--budget", "2GB", code=75)
    assert "denoise does not fit" in r.output and "give memory_budget >=" in r.output
    # `ltx2 run` refuses before running anything
    job = yaml.safe_load(full.read_text())
    small = full.with_name("small.yaml")
    small.write_text(yaml.safe_dump({**job, "memory_budget": "2GB"}))
    r = cli("run", str(small), code=75)
    assert "does not fit" in r.output
    assert not list(Path(job["work_dir"]).glob("*.zarr*"))


def test_same_job_same_choices_and_keys(full):
    job = load_job(full)
    a, b = plan_job(job, 14 * GB), plan_job(job, 14 * GB)
    assert [s.params for s in a.stages] == [s.params for s in b.stages]
    assert plan_keys(a.stages) == plan_keys(b.stages)
    # the budget itself is not in any key: a budget that changes no choice changes no key
    c = plan_job(job, 14 * GB + (64 << 20))
    assert [p.choice for p in c.plans.values()] == [p.choice for p in a.plans.values()]
    assert plan_keys(c.stages) == plan_keys(a.stages)


def test_a_budget_that_flips_a_choice_changes_that_stages_key(full):
    job = load_job(full)
    big, small = plan_job(job, 16 * GB), plan_job(job, 15 * GB)
    kb, ks = plan_keys(big.stages), plan_keys(small.stages)
    flipped = {n for n in kb if big.plans[n].choice != small.plans[n].choice}
    assert flipped == {"refine"}  # q4 resident (15.7 GB) -> streamed; denoise's q4 (14.3 GB) fits both
    sb, ss = {s.name: s for s in big.stages}, {s.name: s for s in small.stages}
    changed_outputs = set()
    for s in big.stages:  # in order: a key changes iff the choice or an input's key changed
        upstream = any(i in changed_outputs for i in s.inputs)
        assert (kb[s.name] != ks[s.name]) == (s.name in flipped or upstream), s.name
        assert (sb[s.name].params == ss[s.name].params) == (s.name not in flipped)
        if kb[s.name] != ks[s.name]:
            changed_outputs.add(s.output)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tinyrun")
    job = yaml.safe_load((ROOT / "examples" / "tiny.yaml").read_text())
    # one-stage (5 stage processes, not 7) and one step: quick; refine shares denoise's code path
    job.update(pipeline="one-stage", width=96, height=64, output=str(folder / "out.mp4"), work_dir=str(folder / "work"),
               steps=1)
    (folder / "job.yaml").write_text(yaml.safe_dump(job))
    ltx2("run", str(folder / "job.yaml"))
    return folder


@pytest.mark.slow
def test_manifest_records_the_choice_and_the_measured_peak(tiny_run):
    m = json.loads((tiny_run / "work" / "manifest.json").read_text())
    recs = {s["name"]: s for s in m["stages"]}
    for name in ("text-encode", "denoise"):  # the tiny files are bf16: bf16 holds them exactly
        assert recs[name]["choice"] == {"weights_mode": {"precision": "bfloat16", "streaming": False}}
        assert recs[name]["choice_label"] == "bfloat16"
    assert recs["decode"]["choice"] == {"tiling": None} and recs["decode"]["choice_label"] == "untiled"
    for name in ("text-encode", "denoise", "decode", "vocode"):
        assert recs[name]["peak_rss"] > 0 and recs[name]["estimated_bytes"] > 0
    assert "0 of 6 stages will run" in cli("plan", str(tiny_run / "job.yaml")).output


@pytest.mark.slow
def test_a_streamed_stage_writes_what_the_resident_stage_wrote(tiny_run, tmp_path):
    """The denoise stage run by hand with streamed weights gives the artifact the resident run gave.

    Not bit for bit: streamed, the four guided passes run stacked in one call (one read of the blocks
    per step), resident one at a time (a quarter of the activations), so BLAS sums in another order
    (~1e-6). The transformer itself, streamed vs resident, is compared exactly in test_streaming.py."""
    from ltx2.artifacts_schema import open_artifact

    work = tiny_run / "work"
    ref = open_artifact(work / "stage1.zarr")
    params = {**ref.params, "weights_mode": {"precision": "bfloat16", "streaming": True}}
    out = tmp_path / "stage1.zarr"
    ltx2("stage", "denoise", "--in", str(work / "text.zarr"), "--out", str(out), "--params-json", json.dumps(params))
    got = open_artifact(out, verify=True)
    assert got.params["weights_mode"] == {"precision": "bfloat16", "streaming": True}
    assert got.cache_key != ref.cache_key  # another choice, another key
    for arr in ("video", "audio"):
        a, b = got.read_numpy(arr), ref.read_numpy(arr)
        assert np.abs(a - b).max() <= 1e-5 * max(1.0, np.abs(b).max()), arr


def test_plan_with_user_lora_and_temporal_upscale_at_full_size(full, tmp_path):  # at 12 GB
    """A user LoRA (rank 64, every block) and the temporal upscaler, at full size: the LoRA is read by both
    sampling stages (and, streamed, with every block); refine plans 2N-1 frames at twice the rate."""
    from ltx2.models.full_size import checkpoint_layout, lora_layout, write_header_only

    job = yaml.safe_load(full.read_text())
    lora = tmp_path / "my-style-lora-r64.safetensors"
    write_header_only(lora, lora_layout(checkpoint_layout(), rank=64), {"format": "pt"}, "BF16")
    job["model"]["loras"] = [{"path": str(lora), "strength": 0.8}]
    job.update(frames=49, temporal_upscale=True, work_dir=str(tmp_path / "work"), output=str(tmp_path / "o.mp4"))
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    jp = plan_job(load_job(path), 12 * GB)
    assert not jp.refusals
    stages = {s.name: s for s in jp.stages}
    assert list(stages) == ["text-encode", "denoise", "upscale", "temporal-upscale", "refine", "decode", "vocode",
                            "export", "preview"]
    for name in ("denoise", "refine"):
        assert stages[name].weights["lora.1"] == lora and stages[name].params.loras == [0.8]
    assert "lora.1" not in stages["text-encode"].weights and "lora.1" not in stages["decode"].weights
    assert (stages["refine"].params.frames, stages["refine"].params.fps) == (97, 48.0)
    p = jp.plans
    for name, sp in p.items():
        assert name == "export" or sp.total <= 12 * GB, name
    lora_bytes = 2 * sum(int(np.prod(s)) for s in lora_layout(checkpoint_layout(), rank=64).values())
    # refine streams at 12 GB with and without the LoRA: each pass reads the LoRA's A and B besides the blocks
    without = plan_job(load_job(full), 12 * GB).plans["refine"]
    assert p["refine"].choice == without.choice and p["refine"].choice["weights_mode"]["streaming"]
    assert p["refine"].stream_bytes_per_pass - without.stream_bytes_per_pass == lora_bytes
