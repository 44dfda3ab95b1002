"""The job file: every bad field reported at once, with its value, its rule and a fix."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import psutil
import pytest
import yaml

from ltx2.orchestrator.job import (DEFAULT_NEGATIVE_PROMPT, Job, JobError, ModelFiles, default_memory_budget,
                                   load_job, official_stg_blocks, official_steps, parse_job, parse_memory_size,
                                   work_dir_holder, write_problems)

REPO = Path(__file__).resolve().parents[2]


def write_safetensors(path: Path, metadata: dict | None = None) -> Path:
    header = {"__metadata__": metadata or {}, "w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
    raw = json.dumps(header).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 8)
    return path


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    """A folder with fake real-weight files, laid out as a user would name them in a job."""
    w = tmp_path / "weights"
    write_safetensors(w / "ltx-2-dev.safetensors")
    write_safetensors(w / "upscaler.safetensors")
    write_safetensors(w / "lora.safetensors")
    write_safetensors(w / "gemma" / "model-00001-of-00001.safetensors")
    (w / "gemma" / "tokenizer.json").write_text("{}")
    return w


def problems(data: dict, base_dir: Path | None = None) -> list[str]:
    with pytest.raises(JobError) as info:
        parse_job(data, base_dir=base_dir)
    return info.value.problems


def only_problem(data: dict, base_dir: Path | None = None) -> str:
    found = problems(data, base_dir)
    assert len(found) == 1, found
    return found[0]


# ----------------------------------------------------------------------------- one bad field each

@pytest.mark.parametrize("fields, expected", [
    ({"frames": 120}, ["frames: 120 is not 8k+1", "use 113 or 121"]),
    ({"frames": 0}, ["frames: 0 is not 8k+1", "use 1"]),
    ({"pipeline": "two-stage", "width": 96}, ["width: 96 is not a positive multiple of 64", "use 64 or 128"]),
    ({"pipeline": "distilled", "height": 480}, ["height: 480 is not a positive multiple of 64", "use 448 or 512"]),
    ({"pipeline": "one-stage", "height": 500}, ["height: 500 is not a positive multiple of 32", "use 480 or 512"]),
    ({"pipeline": "one-stage", "width": 0}, ["width: 0 is not a positive multiple of 32", "use 32"]),
    ({"pipeline": "two-stage", "steps": 0}, ["steps: 0 is not a positive number of steps"]),
    ({"pipeline": "distilled", "steps": 8}, ["steps: 8 does not apply to pipeline distilled", "remove steps"]),
    ({"fps": 0}, ["fps: 0 is not a positive frame rate"]),
    ({"fps": -24}, ["fps: -24 is not a positive frame rate"]),
    ({"pipeline": "distiled"}, ["pipeline: 'distiled' is not one of distilled, two-stage, one-stage",
                                "did you mean distilled"]),
    ({"seeed": 3}, ["seeed: unknown field (value 3)", "did you mean seed"]),
    ({"guidance": {"audio": {"cffg": 5}}, "pipeline": "two-stage"},
     ["guidance.audio.cffg: unknown field (value 5)", "did you mean cfg"]),
    ({"guidance": {"video": {"rescale": 2}}, "pipeline": "one-stage"}, ["guidance.video.rescale: 2 is not <= 1"]),
    ({"guidance": {"video": {"cfg": 4}}}, ["guidance: a mapping does not apply to pipeline distilled"]),
    ({"negative_prompt": "ugly"}, ["negative_prompt: 'ugly' does not apply to pipeline distilled"]),
    ({"frames": "many"}, ["frames: 'many' is not a whole number"]),
    ({"crf": 60}, ["crf: 60 is not <= 51"]),
    ({"seed": -1}, ["seed: -1 is not >= 0"]),
    ({"memory_budget": "lots"}, ["memory_budget: 'lots' is not a memory size"]),
    ({"tiling": {"spatial_tile": 256, "spatial_overlap": 256}},
     ["tiling.spatial_overlap: 256 is not smaller than spatial_tile (256)", "use at most 224"]),
    ({"tiling": {"temporal_tile": 12}}, ["tiling.temporal_tile: 12 is not a multiple of 8 of at least 16"]),
    ({"tiling": "sometimes"}, ["tiling: 'sometimes' is not a tiling mode"]),
    ({"model": "huge"}, ["model: 'huge' is not a model name", "model: tiny"]),
    ({"output": "clip.mov"}, ["output: 'clip.mov' is not an .mp4 path"]),
    ({"pipeline": "one-stage", "guidance": 5}, ["guidance: 5 is not a mapping"]),
    ({"tiling": {"spatial_tile": "big"}}, ["tiling.spatial_tile: 'big' is not a whole number", "e.g. 512"]),
])
def test_each_bad_field_is_named_with_value_and_rule(fields: dict, expected: list[str]) -> None:
    data = {"prompt": "a fox", **fields}
    message = only_problem(data)
    for part in expected:
        assert part in message, message


def test_missing_prompt_is_reported() -> None:
    assert only_problem({}) == "prompt: missing; it is required"
    assert "prompt: '' is empty" in only_problem({"prompt": ""})


def test_missing_weight_file_is_named_with_its_resolved_folder(weights: Path) -> None:
    model = {"checkpoint": "nope.safetensors", "gemma": "gemma", "spatial_upsampler": "upscaler.safetensors",
             "distilled_lora": "lora.safetensors"}
    msg = only_problem({"prompt": "x", "pipeline": "two-stage", "model": model}, base_dir=weights)
    assert msg.startswith("model.checkpoint: 'nope.safetensors' does not exist")
    assert str(weights) in msg  # says where relative paths start


def test_weights_a_pipeline_needs_are_required(weights: Path) -> None:
    model = {"checkpoint": "ltx-2-dev.safetensors", "gemma": "gemma"}
    msg = only_problem({"prompt": "x", "pipeline": "two-stage", "model": model}, base_dir=weights)
    assert "model: a mapping lacks spatial_upsampler, distilled_lora, which pipeline two-stage needs" in msg
    msg = only_problem({"prompt": "x", "pipeline": "distilled", "model": model}, base_dir=weights)
    assert "lacks spatial_upsampler," in msg and "distilled_lora" not in msg
    job = parse_job({"prompt": "x", "pipeline": "one-stage", "model": model}, base_dir=weights)
    assert set(job.weight_files()) == {"checkpoint", "gemma"}


def test_weight_file_kinds_are_checked(weights: Path) -> None:
    (weights / "notes.txt").write_text("hi")
    model = {"checkpoint": "notes.txt", "gemma": "ltx-2-dev.safetensors"}
    found = problems({"prompt": "x", "pipeline": "one-stage", "model": model}, base_dir=weights)
    assert any(p.startswith("model.checkpoint: 'notes.txt' is not a .safetensors file") for p in found), found
    assert any(p.startswith("model.gemma: 'ltx-2-dev.safetensors' is not a folder") for p in found), found


def test_every_bad_field_is_reported_together(tmp_path: Path) -> None:
    job = tmp_path / "bad.yaml"
    job.write_text(yaml.safe_dump({
        "pipeline": "two-stage", "prompt": "a fox", "width": 100, "height": 96, "frames": 120, "fps": 0,
        "steps": -3, "seeed": 1, "crf": 99, "memory_budget": "plenty",
        "model": {"checkpoint": "gone.safetensors", "gemma": "nofolder"},
    }))
    with pytest.raises(JobError) as info:
        load_job(job)
    found = info.value.problems
    fields = [p.split(":")[0] for p in found]
    assert sorted(fields) == sorted(["width", "height", "frames", "fps", "steps", "seeed", "crf", "memory_budget",
                                     "model.checkpoint", "model.gemma"])
    text = str(info.value)
    assert text.startswith(f"{job}: 10 problems")
    assert "width: 100 is not a positive multiple of 64" in text and "frames: 120 is not 8k+1" in text


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    job = tmp_path / "broken.yaml"
    job.write_text("prompt: a fox\nframes: [1, 2\n")
    with pytest.raises(JobError) as info:
        load_job(job)
    assert "not valid YAML at line" in info.value.problems[0]


def test_a_job_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    job = tmp_path / "list.yaml"
    job.write_text("- a fox\n")
    with pytest.raises(JobError) as info:
        load_job(job)
    assert "is not a mapping of fields" in info.value.problems[0]


# ----------------------------------------------------------------------------- defaults and values

def test_defaults_and_official_guidance() -> None:
    job = parse_job({"prompt": "a fox"})
    assert (job.pipeline, job.frames, job.fps, job.model, job.tiling, job.steps) == \
           ("distilled", 121, 24.0, "tiny", "auto", None)
    assert job.negative_prompt == DEFAULT_NEGATIVE_PROMPT
    v, a = job.guidance.video, job.guidance.audio
    assert (v.cfg, v.stg, v.rescale, v.modality) == (3.0, 1.0, 0.7, 3.0)
    assert (a.cfg, a.stg, a.rescale, a.modality) == (7.0, 1.0, 0.7, 3.0)


def test_partial_guidance_keeps_the_other_defaults() -> None:
    job = parse_job({"prompt": "a fox", "pipeline": "two-stage", "guidance": {"audio": {"cfg": 5}}})
    assert job.guidance.audio.cfg == 5.0 and job.guidance.audio.rescale == 0.7
    assert job.guidance.video.cfg == 3.0


def test_official_checkpoint_defaults() -> None:
    assert official_steps("2.0") == 40 and official_steps("2.3.0") == 30
    assert official_stg_blocks("2.0", 48) == [29] and official_stg_blocks("2.3", 48) == [28]
    assert official_stg_blocks("tiny-2.0", 2) == [1]
    assert official_steps("tiny-2.3") == 30 and official_stg_blocks("tiny-2.3", 2) == [1]


def test_the_model_field_takes_tiny_and_tiny_23(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LTX2_TINY_DIR", str(tmp_path / "tiny"))
    job = parse_job({"prompt": "a fox", "model": "tiny-2.3"})
    assert job.model == job.tiny_model == "tiny-2.3"
    files = job.weight_files()  # its own folder beside the 2.0 one, its own file names
    assert files["checkpoint"] == tmp_path / "tiny-2.3" / "ltx2.3-tiny.safetensors"
    assert files["gemma"] == tmp_path / "tiny-2.3" / "gemma"
    assert parse_job({"prompt": "a fox"}).weight_files()["checkpoint"] == tmp_path / "tiny" / "ltx2-tiny.safetensors"
    assert (job.loras, job.converted_roles(), job.distilled_lora_strength) == ([], {}, 1.0)
    assert parse_job({"prompt": "a fox"}).tiny_model == "tiny"
    msg = only_problem({"prompt": "a fox", "model": "tiny-2.5"})
    assert "model: 'tiny-2.5' is not a model name" in msg and "tiny-2.3" in msg


@pytest.mark.parametrize("text, expected", [
    ("10GB", 10 << 30), ("10 GiB", 10 << 30), ("10g", 10 << 30), ("512MB", 512 << 20), ("1.5GB", 3 << 29),
    ("2T", 2 << 40), (12345678901, 12345678901), ("4096", 4096),
])
def test_memory_budget_parsing(text, expected) -> None:
    assert parse_memory_size(text) == expected
    if expected >= 256 << 20:
        assert parse_job({"prompt": "x", "memory_budget": text}).memory_budget == expected


def test_memory_budget_refuses_nonsense_and_tiny_values() -> None:
    for bad in ("12 parsecs", "GB", "-3GB", True):
        with pytest.raises(ValueError):
            parse_memory_size(bad)
    assert "memory_budget: '100MB' is below 256 MiB" in only_problem({"prompt": "x", "memory_budget": "100MB"})


def test_default_memory_budget_leaves_a_margin(monkeypatch) -> None:
    assert parse_job({"prompt": "x"}).memory_budget == default_memory_budget() < psutil.virtual_memory().total
    import ltx2.orchestrator.job as job_module

    for total, expected in [(32 << 30, (32 << 30) - (32 << 30) // 5), (16 << 30, (16 << 30) - (16 << 30) // 5),
                            (8 << 30, 5 << 30), (2 << 30, 1 << 30)]:
        monkeypatch.setattr(job_module.psutil, "virtual_memory", lambda t=total: type("VM", (), {"total": t})())
        assert default_memory_budget() == expected, total


# ----------------------------------------------------------------------------- paths

def test_paths_are_relative_to_the_job_files_folder(weights: Path, tmp_path: Path, monkeypatch) -> None:
    jobs = weights.parent / "jobs"
    jobs.mkdir()
    job_file = jobs / "fox.yaml"
    job_file.write_text(yaml.safe_dump({
        "prompt": "a fox", "pipeline": "two-stage", "output": "renders/fox.mp4",
        "model": {"checkpoint": "../weights/ltx-2-dev.safetensors", "gemma": "../weights/gemma",
                  "spatial_upsampler": "../weights/upscaler.safetensors",
                  "distilled_lora": "../weights/lora.safetensors", "distilled_lora_strength": 0.8},
    }))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the working directory must not matter
    job = load_job(Path("..") / "weights" / ".." / "jobs" / "fox.yaml")
    assert isinstance(job.model, ModelFiles)
    assert job.model.checkpoint == (weights / "ltx-2-dev.safetensors").resolve()
    assert job.model.gemma == (weights / "gemma").resolve()
    assert job.output == (jobs / "renders" / "fox.mp4").resolve()
    assert job.work_dir == (jobs / "fox.work").resolve()  # defaults follow the job's name
    assert job.distilled_lora_strength == 0.8


def test_jobs_in_one_folder_get_their_own_output_and_work_dir(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / f"{name}.yaml").write_text("prompt: a fox\n")
    a, b = load_job(tmp_path / "a.yaml"), load_job(tmp_path / "b.yaml")
    assert a.output == tmp_path / "a.mp4" and b.output == tmp_path / "b.mp4"
    assert a.work_dir != b.work_dir


def test_the_tiny_example_is_a_valid_job() -> None:
    job = load_job(REPO / "examples" / "tiny.yaml")
    assert job.model == "tiny" and (job.frames - 1) % 8 == 0 and job.width % 64 == 0
    assert job.output == REPO / "examples" / "tiny.mp4"


def test_job_is_immutable() -> None:
    job = parse_job({"prompt": "a fox"})
    with pytest.raises(Exception):
        job.seed = 3  # type: ignore[misc]
    assert isinstance(job, Job)


# ----------------------------------------------------------------------------- user LoRAs and converted folders

@pytest.fixture(scope="module")
def tiny_files() -> dict[str, Path]:
    from ltx2.models.tiny import ensure_tiny_model

    return ensure_tiny_model()


def tiny_model(tiny_files, **changes) -> dict:
    model = {"checkpoint": str(tiny_files["checkpoint"]), "gemma": str(tiny_files["gemma"]),
             "spatial_upsampler": str(tiny_files["spatial_upsampler"])}
    model.update(changes)
    return {k: v for k, v in model.items() if v is not None}


def test_user_loras_are_read_with_their_strengths(tiny_files) -> None:
    lora = str(tiny_files["distilled_lora"])
    job = parse_job({"prompt": "a fox", "model": tiny_model(tiny_files, loras=[{"path": lora, "strength": 0.6},
                                                                               {"path": lora}])})
    assert job.loras == [(tiny_files["distilled_lora"], 0.6), (tiny_files["distilled_lora"], 1.0)]
    assert parse_job({"prompt": "a fox"}).loras == []


@pytest.mark.parametrize("item, expected", [
    ({"path": "nowhere.safetensors"}, ["model.loras.0.path: ", "does not exist"]),
    ({"path": "LORA", "strength": "strong"}, ["model.loras.0.strength: 'strong' is not a number"]),
    ({"path": "LORA", "strength": float("nan")}, ["model.loras.0.strength: nan is not a finite number"]),
    ({"path": "LORA", "strenght": 0.5}, ["model.loras.0.strenght: unknown field", "did you mean strength?"]),
    ({"path": "UPSAMPLER"}, ["model.loras.0.path: ", "not a LoRA file", "belongs under spatial_upsampler"]),
])
def test_bad_lora_items_are_named(tiny_files, item, expected) -> None:
    subst = {"LORA": str(tiny_files["distilled_lora"]), "UPSAMPLER": str(tiny_files["spatial_upsampler"])}
    item = {k: subst.get(v, v) if isinstance(v, str) else v for k, v in item.items()}
    msg = only_problem({"prompt": "a fox", "model": tiny_model(tiny_files, loras=[item])})
    for part in expected:
        assert part in msg, msg


@pytest.fixture(scope="module")
def converted(tiny_files, tmp_path_factory) -> tuple[Path, Path]:
    """(a converted transformer alone, the same with the distilled LoRA fused at 0.5)."""
    from ltx2.models.weights.conversion import convert_checkpoint

    plain, fused = tmp_path_factory.mktemp("conv-plain"), tmp_path_factory.mktemp("conv-fused")
    convert_checkpoint(tiny_files["checkpoint"], plain, files=["transformer"], force=True)
    convert_checkpoint(tiny_files["checkpoint"], fused, files=["transformer"], force=True,
                       loras=[(tiny_files["distilled_lora"], 0.5)])
    return plain, fused


def test_a_converted_folder_stands_in_where_it_holds_the_part(tiny_files, converted) -> None:
    from ltx2.orchestrator.graph import plan_stages

    plain, _ = converted
    job = parse_job({"prompt": "a fox", "model": tiny_model(tiny_files, converted=str(plain))})
    files = {st.name: st.weights for st in plan_stages(job)}
    assert files["denoise"]["checkpoint"] == plain / "transformer.safetensors"
    assert files["refine"]["checkpoint"] == plain / "transformer.safetensors"
    # what the folder does not hold comes from the official files
    assert files["decode"]["checkpoint"] == tiny_files["checkpoint"]
    assert files["text-encode"] == {"gemma": tiny_files["gemma"], "checkpoint": tiny_files["checkpoint"]}


def test_bad_converted_folders_are_refused_with_the_reason(tiny_files, converted, tmp_path) -> None:
    plain, fused = converted
    msg = only_problem({"prompt": "a fox", "model": tiny_model(tiny_files, converted=str(tmp_path))})
    assert "model.converted: " in msg and "manifest.json" in msg and "ltx2 convert" in msg
    msg = only_problem({"prompt": "a fox", "model": tiny_model(tiny_files, checkpoint=None, converted=str(plain))})
    assert "lacks checkpoint (model.converted lacks text_embeddings" in msg and "add checkpoint: PATH" in msg
    # converted from another checkpoint than the one named
    other = tmp_path / "other.safetensors"
    raw = tiny_files["checkpoint"].read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    header["__metadata__"]["note"] = "another release"  # same tensors, another file (identity = size + header)
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    other.write_bytes(struct.pack("<Q", len(head)) + head + raw[8 + n:])
    msg = only_problem({"prompt": "a fox", "model": tiny_model(tiny_files, checkpoint=str(other),
                                                               converted=str(plain))})
    assert "was converted from" in msg and "other.safetensors" in msg
    # a LoRA fused at conversion must be one of the job's LoRAs (every sampling stage would apply it)
    msg = only_problem({"prompt": "a fox", "model": tiny_model(tiny_files, converted=str(fused))})
    assert "LoRAs fused" in msg and "x 0.5" in msg and "model.loras" in msg
    lora = {"path": str(tiny_files["distilled_lora"]), "strength": 0.5}
    job = parse_job({"prompt": "a fox", "model": tiny_model(tiny_files, converted=str(fused), loras=[lora])})
    assert job.model.converted == fused


# ----------------------------------------------------------------------------- bad input refused when the job is read

@pytest.mark.parametrize("fields, expected", [
    ({"fps": float("nan")}, "fps: nan is not a finite number"),
    ({"fps": float("inf")}, "fps: inf is not a finite number"),
    ({"seed": float("inf")}, "seed: inf is not a finite number"),
    ({"width": float("-inf")}, "width: -inf is not a finite number"),
    ({"crf": float("nan")}, "crf: nan is not a finite number"),
    ({"pipeline": "one-stage", "guidance": {"video": {"cfg": float("nan")}}},
     "guidance.video.cfg: nan is not a finite number"),
    ({"pipeline": "two-stage", "guidance": {"audio": {"rescale": float("inf")}}},
     "guidance.audio.rescale: inf is not a finite number"),
    ({"tiling": {"spatial_tile": float("nan")}}, "tiling.spatial_tile: nan is not a finite number"),
    ({"memory_budget": float("inf")}, "memory_budget: inf is not a memory size"),
])
def test_a_non_finite_number_is_refused_naming_its_field(fields: dict, expected: str) -> None:
    assert expected in only_problem({"prompt": "a fox", **fields})


def test_non_finite_model_numbers_are_refused(weights: Path) -> None:
    model = {"checkpoint": "ltx-2-dev.safetensors", "gemma": "gemma", "distilled_lora_strength": float("nan")}
    found = problems({"prompt": "x", "pipeline": "one-stage", "model": model}, base_dir=weights)
    assert any(p.startswith("model.distilled_lora_strength: nan is not a finite number") for p in found), found


@pytest.mark.parametrize("fields, expected", [
    ({"width": 65536, "height": 64}, ["width: 65536 is above 4096 px", "use at most 4096"]),
    ({"height": 8192}, ["height: 8192 is above 4096 px"]),
    ({"frames": 1009, "fps": 60}, ["frames: 1009 is above 1001 frames", "use at most 1001"]),
    ({"frames": 121, "fps": 1}, ["fps: 1 makes 121 frames last 120 s, beyond 20 s", "use fps >= 6"]),
    ({"frames": 1001, "fps": 24}, ["fps: 24 makes 1001 frames last 41.6667 s", "use fps >= 50"]),
    ({"frames": 1, "fps": 50}, ["fps: 50 makes 1 frame too short for one audio latent frame", "use frames >= 9"]),
    ({"frames": 9, "fps": 1e9}, ["fps: 1000000000.0 makes 9 frames too short", "use a lower fps"]),
])
def test_sizes_beyond_the_model_are_refused(fields: dict, expected: list[str]) -> None:
    msg = only_problem({"prompt": "a fox", **fields})
    for part in expected:
        assert part in msg, msg


def test_the_largest_supported_sizes_are_accepted() -> None:
    job = parse_job({"prompt": "a fox", "width": 4096, "height": 4096, "frames": 1001, "fps": 50})
    assert (job.width, job.height, job.frames) == (4096, 4096, 1001)
    assert parse_job({"prompt": "a fox", "frames": 481, "fps": 24}).frames == 481  # 20 s exactly
    assert parse_job({"prompt": "a fox", "frames": 1, "fps": 24}).frames == 1  # one frame carries 1/24 s of sound


@pytest.mark.parametrize("text, tiling", [("tiling: off\n", "off"), ("tiling: no\n", "off"), ("tiling: 'off'\n", "off"),
                                          ("tiling: auto\n", "auto")])
def test_tiling_off_unquoted_means_off(tmp_path: Path, text: str, tiling: str) -> None:
    job = tmp_path / "job.yaml"
    job.write_text("prompt: a fox\n" + text)
    assert load_job(job).tiling == tiling


def test_tiling_on_is_refused_with_the_yaml_reading_named(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text("prompt: a fox\ntiling: on\n")
    with pytest.raises(JobError) as info:
        load_job(job)
    assert info.value.problems == ["tiling: True (YAML reads an unquoted on / yes / true so) is not a tiling mode; "
                                   "write `auto`, `off`, or a mapping with spatial_tile, spatial_overlap, "
                                   "temporal_tile, temporal_overlap"]


def test_a_duplicate_key_is_refused_with_its_lines(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text("prompt: a fox\nseed: 1\nframes: 9\nseed: 2\npipeline: one-stage\n"
                   "guidance:\n  video: {cfg: 2, cfg: 4}\n")
    with pytest.raises(JobError) as info:
        load_job(job)
    assert info.value.problems == [
        "'seed' at line 4, column 1: the key is given twice (first at line 2, column 1); keep one",
        "'cfg' at line 7, column 19: the key is given twice (first at line 7, column 11); keep one",
    ]


def test_merge_keys_overridden_explicitly_are_no_duplicates(tmp_path: Path) -> None:
    merged = tmp_path / "merged.yaml"
    merged.write_text("prompt: a fox\npipeline: one-stage\nguidance:\n  video:\n    <<: {cfg: 2, stg: 0.5}\n"
                      "    cfg: 4\n")
    g = load_job(merged).guidance.video
    assert (g.cfg, g.stg) == (4.0, 0.5)


def test_a_job_file_that_is_not_utf8_names_the_byte_and_line(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_bytes("prompt: a fox\nnegative_prompt: caf".encode() + b"\xe9 noir\n")  # Latin-1, not UTF-8
    with pytest.raises(JobError) as info:
        load_job(job)
    assert info.value.problems == ["(file): is not UTF-8 text (byte 0xe9 at line 2, column 21); save it as UTF-8"]


def test_a_job_file_that_is_a_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(JobError) as info:
        load_job(tmp_path)
    assert "is a folder, not a job file" in info.value.problems[0]


@pytest.fixture
def blocked(tmp_path: Path) -> Path:
    """A folder holding a plain file `afile` and a symlink loop `loop1` <-> `loop2`."""
    (tmp_path / "afile").write_text("mine")
    (tmp_path / "loop1").symlink_to("loop2")
    (tmp_path / "loop2").symlink_to("loop1")
    (tmp_path / "clip.mp4").mkdir()
    return tmp_path


@pytest.mark.parametrize("fields, expected", [
    ({"output": "afile/x.mp4"}, "output: 'afile/x.mp4' cannot be made: {d}/afile is a file, not a folder"),
    ({"output": "afile/deeper/x.mp4"}, "output: 'afile/deeper/x.mp4' cannot be made: {d}/afile is a file"),
    ({"output": "clip.mp4"}, "output: 'clip.mp4' is a folder; give a file path ending in .mp4"),
    ({"output": "loop1/x.mp4"}, "output: 'loop1/x.mp4' cannot be followed (Symlink loop"),
    ({"work_dir": "afile"}, "work_dir: 'afile' exists and is not a folder"),
    ({"work_dir": "afile/work"}, "work_dir: 'afile/work' cannot be made: {d}/afile is a file, not a folder"),
    ({"work_dir": "loop1"}, "work_dir: 'loop1' cannot be followed (Symlink loop"),
    ({"work_dir": "{d}/loop1/work"}, "work_dir: '{d}/loop1/work' cannot be followed (Symlink loop"),
    ({"store": "afile/store"}, "store: 'afile/store' cannot be made: {d}/afile is a file, not a folder"),
    ({"store": "loop2"}, "store: 'loop2' cannot be followed (Symlink loop"),
])
def test_paths_that_cannot_be_made_are_refused(blocked: Path, fields: dict, expected: str) -> None:
    fields = {k: v.format(d=blocked) for k, v in fields.items()}
    assert only_problem({"prompt": "a fox", **fields}, base_dir=blocked).startswith(expected.format(d=blocked))
    assert (blocked / "afile").read_text() == "mine"


def test_folders_a_run_cannot_write_are_named(tmp_path: Path, monkeypatch) -> None:
    job = parse_job({"prompt": "a fox", "work_dir": "new/work", "output": "out/x.mp4"}, base_dir=tmp_path)
    store = tmp_path / "store"
    assert write_problems(job, store) == []
    real_access = os.access
    denied = {tmp_path}  # as a read-only folder (or mount) answers; root passes chmod, so the answer is stubbed
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) not in denied and real_access(p, mode))
    found = write_problems(job, store)
    assert found == [
        f"work_dir: '{tmp_path}/new/work' cannot be made: {tmp_path} is not writable; make it writable, or give "
        "another work_dir",
        f"store: '{store}' cannot be made: {tmp_path} is not writable; make it writable, or give another store: "
        "folder (or $LTX2_STORE)",
        f"output: '{tmp_path}/out' cannot be made: {tmp_path} is not writable; make its folder writable, or give "
        "another output"]
    (tmp_path / "new" / "work").mkdir(parents=True)
    denied.add(tmp_path / "new" / "work")
    assert write_problems(job, store)[0] == (f"work_dir: '{tmp_path}/new/work' is not writable; make it writable, "
                                             "or give another work_dir")
    monkeypatch.setattr(os, "access", real_access)
    store.write_text("not a folder")  # $LTX2_STORE naming a file (a job's store: field is refused when read)
    assert write_problems(job, store) == [f"store: '{store}' is a file, not a folder; give another store: folder "
                                          "(or $LTX2_STORE)"]


def test_a_work_dir_held_by_another_job_is_named(tmp_path: Path) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("prompt: a fox\nwork_dir: shared\n")
    b.write_text("prompt: a cat\nwork_dir: shared\n")
    job_b = load_job(b)
    assert work_dir_holder(job_b, b) is None  # no manifest yet
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "manifest.json").write_text(json.dumps({"job": str(a)}))
    assert work_dir_holder(job_b, b) == a
    assert work_dir_holder(load_job(a), a) is None  # its own folder
    a.write_text("prompt: a fox\nwork_dir: elsewhere\n")  # a moved on (or this folder was copied): b may take it
    assert work_dir_holder(job_b, b) is None
    a.unlink()
    assert work_dir_holder(job_b, b) is None
