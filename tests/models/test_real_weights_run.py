"""`ltx2 run` end to end on tiny checkpoints in the official file formats, named file by file in the job:
bf16 files, an fp8 checkpoint, user LoRAs with strengths, the Gemma folder, and a converted folder
(`ltx2 convert`, float and 8-bit).

Each render's final latents are compared with an independent way of getting the same numbers (a float32
twin of the fp8 file; a checkpoint with the LoRAs fused beforehand in numpy), so a path that silently
ignored its input (an unapplied LoRA, a skipped scale) fails.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
import yaml
from safetensors.numpy import save_file

from ltx2.artifacts_schema import open_artifact
from ltx2.models.tiny import ensure_tiny_model
from ltx2.models.weights import load_tensors, read_header

from support import EXAMPLE, bf16_bits, fp8_pair, ltx2, write_raw

TARGETS = ("attn1.to_q", "attn1.to_v", "audio_attn1.to_k", "ff.net.2")  # what the test LoRAs adapt, every block


@pytest.fixture(scope="module")
def tiny() -> dict[str, Path]:
    return ensure_tiny_model()


def model_files(tiny, **changes) -> dict:
    files = {"checkpoint": str(tiny["checkpoint"]), "gemma": str(tiny["gemma"]),
             "spatial_upsampler": str(tiny["spatial_upsampler"]), "distilled_lora": str(tiny["distilled_lora"])}
    files.update(changes)
    return {k: v for k, v in files.items() if v is not None}


def render(folder: Path, model, **changes) -> Path:
    """Render the example job (two-stage, 9 frames) with ``model``; returns the work folder."""
    folder.mkdir(parents=True, exist_ok=True)
    job = yaml.safe_load(EXAMPLE.read_text())
    job.update(model=model, output=str(folder / "out.mp4"), work_dir=str(folder / "work"), **changes)
    if job["pipeline"] == "distilled":  # unguided: these fields are errors there
        for k in ("steps", "guidance", "negative_prompt"):
            job.pop(k, None)
    (folder / "job.yaml").write_text(yaml.safe_dump(job))
    ltx2("run", str(folder / "job.yaml"))
    assert (folder / "out.mp4").stat().st_size > 0
    return folder / "work"


def latents(work: Path, name: str = "latents.zarr") -> tuple[np.ndarray, np.ndarray]:
    a = open_artifact(work / name)
    return np.asarray(a.read("video"), np.float32), np.asarray(a.read("audio"), np.float32)


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def statuses(work: Path) -> dict[str, str]:
    return {s["name"]: s["status"] for s in json.loads((work / "manifest.json").read_text())["stages"]}


def write_user_lora(path: Path, checkpoint: Path, seed: int, rank: int = 4) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A LoRA in the official layout (``diffusion_model.<module>.lora_A/B.weight``) adapting TARGETS in every
    block; returns target weight key -> (A, B) so the test can fuse it itself."""
    h = read_header(checkpoint)
    rng = np.random.default_rng(seed)
    tensors, pairs = {}, {}
    for key, info in h.tensors.items():
        stem = key[len("model.diffusion_model."):-len(".weight")] if key.startswith("model.diffusion_model.") else ""
        if not (stem.startswith("transformer_blocks.") and stem.split(".", 2)[2] in TARGETS and key.endswith(".weight")):
            continue
        out_f, in_f = info.shape
        a = rng.standard_normal((rank, in_f)).astype(np.float32) * 0.3
        b = rng.standard_normal((out_f, rank)).astype(np.float32) * 0.3
        tensors[f"diffusion_model.{stem}.lora_A.weight"] = a
        tensors[f"diffusion_model.{stem}.lora_B.weight"] = b
        pairs[key] = (a, b)
    assert len(pairs) == 2 * len(TARGETS)  # the tiny transformer has 2 blocks
    save_file(tensors, str(path), metadata={"format": "pt"})
    return pairs


@pytest.fixture(scope="module")
def plain(tiny, tmp_path_factory) -> Path:
    """The example job rendered from the tiny model's files named one by one (bf16 checkpoint, sharded Gemma
    folder, upsampler, distilled LoRA): the work folder."""
    return render(tmp_path_factory.mktemp("plain"), model_files(tiny))


@pytest.mark.slow
def test_official_files_named_in_the_job_render_like_the_embedded_model(plain, example_render):
    embedded = latents(example_render / "work")  # render(folder, "tiny"), shared with test_pipeline
    for got, want in zip(latents(plain), embedded):
        np.testing.assert_array_equal(got, want)


@pytest.mark.slow
def test_user_loras_with_strengths_equal_the_loras_fused_beforehand(tiny, tmp_path):
    """Two LoRAs at 0.7 and -0.4 through `model.loras` == the same deltas added to the checkpoint in numpy.

    The distilled pipeline, so that no distilled LoRA is fused on top in refine (fusing both at once rounds
    to bf16 once, a pre-fused file twice)."""
    a = write_user_lora(tmp_path / "style.safetensors", tiny["checkpoint"], seed=1)
    b = write_user_lora(tmp_path / "subject.safetensors", tiny["checkpoint"], seed=2)
    loras = [{"path": str(tmp_path / "style.safetensors"), "strength": 0.7},
             {"path": str(tmp_path / "subject.safetensors"), "strength": -0.4}]
    with_loras = render(tmp_path / "loras", model_files(tiny, loras=loras), pipeline="distilled")

    h = read_header(tiny["checkpoint"])
    values = {k: np.asarray(v, np.float32) for k, v in load_tensors(h, list(h.tensors), mx.float32).items()}
    for pairs, s in ((a, 0.7), (b, -0.4)):
        for key, (la, lb) in pairs.items():
            values[key] = values[key] + s * (lb.astype(np.float64) @ la).astype(np.float32)
    # stored bf16 like the checkpoint, so both runs hold bf16(W + delta), as the official fusion does
    fused_ckpt = write_raw(tmp_path / "fused.safetensors", {k: ("BF16", bf16_bits(v)) for k, v in values.items()},
                           h.metadata)
    fused = render(tmp_path / "fused", model_files(tiny, checkpoint=str(fused_ckpt)), pipeline="distilled")
    plain = render(tmp_path / "plain", model_files(tiny), pipeline="distilled")
    for got, want, base in zip(latents(with_loras), latents(fused), latents(plain)):
        assert rel(got, want) < 1e-4
        assert rel(got, base) > 1e-2  # the LoRAs really change the render
    # both sampling stages read the LoRAs; the text encoder and the VAEs do not
    plan = json.loads((with_loras / "manifest.json").read_text())["stages"]
    keys_with = {s["name"]: s["key"] for s in plan}
    keys_plain = {s["name"]: s["key"] for s in json.loads((plain / "manifest.json").read_text())["stages"]}
    assert keys_with["text-encode"] == keys_plain["text-encode"]
    assert keys_with["denoise"] != keys_plain["denoise"] and keys_with["refine"] != keys_plain["refine"]

    # a new strength reruns the sampling stages and what follows, nothing before
    job = yaml.safe_load((tmp_path / "loras" / "job.yaml").read_text())
    job["model"]["loras"][1]["strength"] = -0.2
    (tmp_path / "loras" / "job.yaml").write_text(yaml.safe_dump(job))
    ltx2("run", str(tmp_path / "loras" / "job.yaml"))
    st = statuses(with_loras)
    assert st["text-encode"] == "reused" and st["denoise"] == "computed" and st["refine"] == "computed"


def test_a_lora_for_another_model_is_refused_before_anything_runs(tiny, tmp_path):
    h = read_header(tiny["checkpoint"])
    key = next(k for k in h.tensors if k.startswith("model.diffusion_model.transformer_blocks.")
               and k.endswith("attn1.to_q.weight"))
    stem = key[len("model.diffusion_model."):-len(".weight")]
    out_f, in_f = h.tensors[key].shape
    save_file({f"diffusion_model.{stem}.lora_A.weight": np.zeros((2, in_f + 8), np.float32),
               f"diffusion_model.{stem}.lora_B.weight": np.zeros((out_f, 2), np.float32)},
              str(tmp_path / "other.safetensors"), metadata={"format": "pt"})
    job = yaml.safe_load(EXAMPLE.read_text())
    job.update(model=model_files(tiny, loras=[{"path": str(tmp_path / "other.safetensors"), "strength": 1}]),
               work_dir=str(tmp_path / "work"), output=str(tmp_path / "o.mp4"))
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    r = ltx2("run", str(tmp_path / "job.yaml"), check=False)
    assert r.returncode == 2
    assert "model.loras" in r.stdout + r.stderr and "other.safetensors" in r.stdout + r.stderr
    assert not (tmp_path / "work").exists()


@pytest.mark.slow
def test_an_fp8_checkpoint_renders_as_its_dequantised_twin(tiny, tmp_path):
    """Every float weight of the checkpoint stored as scaled fp8 (both official scale spellings) and the
    biases cast-only: the render equals that of a bf16 file holding the dequantised values (the official
    loader dequantises to the model's bf16, and so do the stages)."""
    fp8_pair(tiny["checkpoint"], tmp_path / "ckpt-fp8.safetensors", tmp_path / "ckpt-f32.safetensors")
    assert "F8_E4M3" in {t.dtype for t in read_header(tmp_path / "ckpt-fp8.safetensors").tensors.values()}
    h = read_header(tmp_path / "ckpt-f32.safetensors")
    write_raw(tmp_path / "ckpt-twin.safetensors", {k: ("BF16", bf16_bits(np.asarray(v))) for k, v in load_tensors(
        h, list(h.tensors), mx.float32).items()}, h.metadata)
    fp8 = render(tmp_path / "fp8", model_files(tiny, checkpoint=str(tmp_path / "ckpt-fp8.safetensors")))
    twin = render(tmp_path / "twin", model_files(tiny, checkpoint=str(tmp_path / "ckpt-twin.safetensors")))
    for name in ("stage1.zarr", "latents.zarr"):
        for got, want in zip(latents(fp8, name), latents(twin, name)):
            assert rel(got, want) < 1e-6
    # the VAEs, fp8 here too (not in the official files), read it dequantised in float32, the twin in bf16
    got = np.asarray(open_artifact(fp8 / "frames.zarr").read("video"), np.float32)
    want = np.asarray(open_artifact(twin / "frames.zarr").read("video"), np.float32)
    assert np.abs(got - want).max() <= 3 and np.abs(got - want).mean() < 0.5  # of 255
    got = np.asarray(open_artifact(fp8 / "audio.zarr").read("waveform"), np.float32)
    assert rel(got, np.asarray(open_artifact(twin / "audio.zarr").read("waveform"), np.float32)) < 1e-2


@pytest.mark.slow
def test_a_converted_folder_serves_every_stage(tiny, tmp_path):
    """`ltx2 convert` (float) named as model.converted: every stage reads its converted file and the render
    equals the official files'; 8-bit: the transformer and text encoder quantised, a close render."""
    write_user_lora(tmp_path / "style.safetensors", tiny["checkpoint"], seed=3)
    loras = [{"path": str(tmp_path / "style.safetensors"), "strength": 0.5}]
    official = render(tmp_path / "official", model_files(tiny, loras=loras))
    for bits in (None, 8):
        out = tmp_path / f"conv{bits or 'f'}"
        args = ["convert", "--checkpoint", str(tiny["checkpoint"]), "--gemma", str(tiny["gemma"]),
                "--upsampler", str(tiny["spatial_upsampler"]), "--out", str(out)]
        ltx2(*args, *(["--bits", str(bits), "--group-size", "32"] if bits else []))
        # the converted folder alone (no official checkpoint, Gemma or upsampler) plus the LoRA files
        model = {"converted": str(out), "distilled_lora": str(tiny["distilled_lora"]), "loras": loras}
        work = render(tmp_path / f"run{bits or 'f'}", model)
        used = {s["name"]: s for s in json.loads((work / "manifest.json").read_text())["stages"]}
        for got, want in zip(latents(work), latents(official)):
            if bits is None:
                assert rel(got, want) < 1e-5
            else:
                assert 1e-6 < rel(got, want) < 0.1  # quantised: close, not equal
        assert used["denoise"]["status"] == "computed"
    # a folder that is not a finished conversion is refused by name
    (tmp_path / "convf" / "manifest.json").unlink()
    job = yaml.safe_load((tmp_path / "runf" / "job.yaml").read_text())
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(job))
    r = ltx2("plan", str(tmp_path / "bad.yaml"), check=False)
    assert r.returncode != 0 and "model.converted" in r.stdout + r.stderr and "manifest.json" in r.stdout + r.stderr


@pytest.mark.slow
def test_gemma_single_file_layout_encodes_like_the_sharded_folder(tiny, plain, tmp_path):
    """The Gemma folder as one model.safetensors (keys model.language_model.*, the newer transformers layout)
    gives the same text artifact as the official two-shard folder."""
    src = tiny["gemma"]
    index = json.loads((src / "model.safetensors.index.json").read_text())
    tensors = {}
    for shard in sorted(set(index["weight_map"].values())):
        h = read_header(src / shard)
        for k, v in load_tensors(h, list(h.tensors), mx.float32).items():
            tensors[k.replace("language_model.model.", "model.language_model.", 1)] = ("F32", np.asarray(v, np.float32))
    single = tmp_path / "gemma-single"
    single.mkdir()
    write_raw(single / "model.safetensors", tensors, {"format": "pt"})
    for f in src.iterdir():
        if f.suffix != ".safetensors" and f.name != "model.safetensors.index.json":
            shutil.copy2(f, single / f.name)
    text = open_artifact(plain / "text.zarr")
    ltx2("stage", "text-encode", "--out", str(tmp_path / "text.zarr"), "--params-json", json.dumps(text.params),
         "--weights", f"gemma={single}", "--weights", f"checkpoint={tiny['checkpoint']}")
    mine = open_artifact(tmp_path / "text.zarr")
    for name in ("video_context", "audio_context", "negative_video_context"):
        np.testing.assert_allclose(np.asarray(mine.read(name)), np.asarray(text.read(name)), rtol=0, atol=1e-6)
