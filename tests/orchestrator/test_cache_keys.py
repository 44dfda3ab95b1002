"""Cache keys: a change re-keys exactly the stages it can affect, and nothing else."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from ltx2.artifacts_schema import keys as cache_keys
from ltx2.orchestrator.cache_keys import (WeightFileError, canonical_json, plan_keys, stage_key_material,
                                          weight_identity)
from ltx2.orchestrator.graph import plan_stages
from ltx2.orchestrator.job import parse_job

ALL = {"text-encode", "denoise", "upscale", "refine", "decode", "vocode", "export", "preview"}


def write_safetensors(path: Path, metadata: dict | None = None, data: bytes = b"\0" * 8) -> Path:
    header = {"__metadata__": metadata or {}, "w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
    raw = json.dumps(header).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    w = tmp_path / "weights"
    write_safetensors(w / "dev.safetensors", {"model_version": "2.0"})
    write_safetensors(w / "upscaler.safetensors")
    write_safetensors(w / "lora.safetensors")
    write_safetensors(w / "gemma" / "model-00001-of-00001.safetensors")
    (w / "gemma" / "tokenizer.json").write_text('{"vocab": 1}')
    return w


@pytest.fixture
def base(weights: Path) -> dict:
    return {
        "pipeline": "two-stage", "prompt": "a fox in the snow", "width": 192, "height": 128, "frames": 9,
        "fps": 24, "seed": 42, "steps": 3,
        "model": {"checkpoint": "dev.safetensors", "gemma": "gemma", "spatial_upsampler": "upscaler.safetensors",
                  "distilled_lora": "lora.safetensors"},
    }


def keys(data: dict, weights: Path) -> dict[str, str]:
    job = parse_job(data, base_dir=weights, name="job")
    return plan_keys(plan_stages(job))


def changed(a: dict[str, str], b: dict[str, str]) -> set[str]:
    assert a.keys() == b.keys()
    return {name for name in a if a[name] != b[name]}


def test_keys_are_stable_and_need_no_artifact(base: dict, weights: Path) -> None:
    first = keys(base, weights)
    assert set(first) == ALL and len(set(first.values())) == len(ALL)
    assert all(len(k) == 64 for k in first.values())
    assert keys(dict(base), weights) == first
    assert not (weights / "job.work").exists()  # nothing was written or needed


def test_field_order_and_number_spelling_do_not_matter(base: dict, weights: Path) -> None:
    reordered = dict(reversed(list(base.items())))
    reordered["model"] = dict(reversed(list(base["model"].items())))
    reordered["fps"] = 24.0
    reordered["guidance"] = {"audio": {"rescale": 0.7, "cfg": 7}, "video": {"modality": 3, "cfg": 3.0}}  # defaults
    assert keys(reordered, weights) == keys(base, weights)


def test_a_new_seed_rekeys_denoise_and_everything_after(base: dict, weights: Path) -> None:
    assert changed(keys(base, weights), keys({**base, "seed": 7}, weights)) == ALL - {"text-encode"}


def test_a_new_prompt_rekeys_everything(base: dict, weights: Path) -> None:
    assert changed(keys(base, weights), keys({**base, "prompt": "a hare in the snow"}, weights)) == ALL
    assert changed(keys(base, weights), keys({**base, "negative_prompt": "dull"}, weights)) == ALL


def test_decode_tiling_rekeys_decode_and_export_only(base: dict, weights: Path) -> None:
    tiled = {**base, "tiling": {"spatial_tile": 64, "spatial_overlap": 32, "temporal_tile": None}}
    assert changed(keys(base, weights), keys(tiled, weights)) == {"decode", "export", "preview"}
    # `off` and `auto` resolve to the same (untiled) decode for a video one tile covers
    assert changed(keys(base, weights), keys({**base, "tiling": "off"}, weights)) == set()


def test_output_path_and_crf_rekey_export_only(base: dict, weights: Path) -> None:
    ref = keys(base, weights)
    assert changed(ref, keys({**base, "output": "elsewhere.mp4"}, weights)) == {"export"}
    assert changed(ref, keys({**base, "crf": 18}, weights)) == {"export"}


def test_guidance_and_steps_rekey_from_denoise(base: dict, weights: Path) -> None:
    ref = keys(base, weights)
    assert changed(ref, keys({**base, "steps": 4}, weights)) == ALL - {"text-encode"}
    assert changed(ref, keys({**base, "guidance": {"audio": {"cfg": 5}}}, weights)) == ALL - {"text-encode"}


def test_memory_budget_and_work_dir_change_no_key(base: dict, weights: Path) -> None:
    ref = keys(base, weights)
    assert keys({**base, "memory_budget": "3GB", "work_dir": "other"}, weights) == ref


@pytest.mark.parametrize("file, rekeyed", [
    ("upscaler.safetensors", {"upscale", "refine", "decode", "vocode", "export", "preview"}),
    ("lora.safetensors", {"refine", "decode", "vocode", "export", "preview"}),
    ("dev.safetensors", ALL),
    ("gemma/model-00001-of-00001.safetensors", ALL),
])
def test_a_new_weight_header_rekeys_the_stages_reading_it(base: dict, weights: Path, file: str, rekeyed) -> None:
    ref = keys(base, weights)
    write_safetensors(weights / file, {"model_version": "2.0", "note": "retrained"})
    assert changed(ref, keys(base, weights)) == rekeyed


def test_weight_identity_reads_the_header_not_the_tensors(weights: Path) -> None:
    path = weights / "upscaler.safetensors"
    before = weight_identity(path)
    write_safetensors(path, data=b"\1" * 8)  # same header, same size, other tensor bytes
    cache_keys._file_identity.cache_clear()  # identify afresh, not from the in-process memo
    assert weight_identity(path) == before
    assert set(before) == {"size", "header_sha256"}


def test_folder_identity_covers_every_file(base: dict, weights: Path) -> None:
    ref = keys(base, weights)
    (weights / "gemma" / "tokenizer.json").write_text('{"vocab": 20}')
    assert changed(ref, keys(base, weights)) == ALL  # the tokenizer shapes the text contexts
    ident = weight_identity(weights / "gemma")
    assert set(ident["files"]) == {"model-00001-of-00001.safetensors", "tokenizer.json"}
    (weights / "gemma" / ".cache").mkdir()
    (weights / "gemma" / ".cache" / "lock").write_text("x")
    assert weight_identity(weights / "gemma") == ident  # hidden caches do not count


def test_moving_the_weights_keeps_the_keys(base: dict, weights: Path, tmp_path: Path) -> None:
    job = {**base, "output": str(tmp_path / "out.mp4")}  # absolute, so it does not move with the job folder
    ref = keys(job, weights)
    moved = weights.rename(tmp_path / "moved")
    assert keys(job, moved) == ref


def test_one_stage_keys_chain_decode_to_denoise(base: dict, weights: Path) -> None:
    one = {**base, "pipeline": "one-stage"}
    ref = keys(one, weights)
    assert set(ref) == {"text-encode", "denoise", "decode", "vocode", "export", "preview"}
    assert changed(ref, keys({**one, "seed": 1}, weights)) == {"denoise", "decode", "vocode", "export", "preview"}


def test_key_material_names_its_inputs_keys(base: dict, weights: Path) -> None:
    job = parse_job(base, base_dir=weights)
    stages = plan_stages(job)
    all_keys = plan_keys(stages)
    refine = next(s for s in stages if s.name == "refine")
    material = stage_key_material(refine, {"upscaled.zarr": all_keys["upscale"], "text.zarr": all_keys["text-encode"]})
    assert material["inputs"] == {"upscaled.zarr": all_keys["upscale"], "text.zarr": all_keys["text-encode"]}
    assert set(material["weights"]) == {"checkpoint", "distilled_lora"}
    with pytest.raises(KeyError, match="refine"):
        stage_key_material(refine, {"text.zarr": all_keys["text-encode"]})


def test_missing_weights_are_reported(base: dict, weights: Path, tmp_path: Path) -> None:
    job = parse_job({"prompt": "x"})
    with pytest.raises(WeightFileError, match="tiny model is generated on first use"):
        plan_keys(plan_stages(job, tiny_dir=tmp_path / "tiny"))
    (weights / "broken.safetensors").write_bytes(struct.pack("<Q", 10_000) + b"{}")
    with pytest.raises(WeightFileError, match="truncated or not safetensors"):
        weight_identity(weights / "broken.safetensors")


def test_canonical_json() -> None:
    assert canonical_json({"b": 1.0, "a": [2, 0.5, -0.0], "c": (True, None)}) == '{"a":[2,0.5,0],"b":1,"c":[true,null]}'
    assert canonical_json({"x": Path("/a/b")}) == '{"x":"/a/b"}'
    assert canonical_json(0.1 + 0.2) == "0.30000000000000004"  # no lossy rounding
    with pytest.raises(ValueError):
        canonical_json(float("nan"))
    with pytest.raises(TypeError):
        canonical_json(object())
