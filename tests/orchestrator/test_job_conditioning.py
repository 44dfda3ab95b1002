"""The job's conditioning fields (images, video, audio, retake): valid jobs, each refusal naming its field, value and
fix, the retake's size taken from its source, and the shipped examples with their media."""

from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path

import av
import numpy as np
import pytest
import yaml
from PIL import Image
from safetensors.numpy import save_file

from support import ltx2

from ltx2.models.tiny import ensure_tiny_model
from ltx2.models.weights.identify import slot_problem
from ltx2.orchestrator.job import (AudioCond, ImageCond, JobError, RetakeCond, VideoCond, load_job, parse_job,
                                   reference_downscale_factor_of)
from ltx2.spec.errors import BadInputError
from ltx2.stages.registry import readers_of

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
MEDIA = EXAMPLES / "media"
WORKFLOWS = ("i2v", "keyframes", "ic-lora", "a2v", "retake")


def _make_media_module():
    spec = importlib.util.spec_from_file_location("make_media", MEDIA / "make_media.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_media = _make_media_module()


@pytest.fixture(scope="module")
def tiny23() -> dict[str, Path]:
    return ensure_tiny_model(variant="tiny-2.3")


@pytest.fixture(scope="module")
def folder(tmp_path_factory, tiny23) -> Path:
    """The shipped media and a few odd ones beside them: a clip with no sound, a sound file, a clip whose size is
    not a multiple of 32, a 30-frame clip, a file that is no medium, a LoRA for another model and one with a bad
    reference_downscale_factor."""
    d = tmp_path_factory.mktemp("media")
    for p in MEDIA.iterdir():
        if p.suffix != ".py":
            (d / p.name).write_bytes(p.read_bytes())
    make_media.write_mp4(d / "odd-size.mp4", [make_media.scene(100, 60, i / 8) for i in range(9)],
                         sound=make_media.voice(9 / 24))
    make_media.write_mp4(d / "thirty.mp4", [make_media.scene(96, 64, i / 29) for i in range(30)],
                         sound=make_media.voice(30 / 24))
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a picture")
    (d / "folder.png").mkdir()
    lora = make_media.ic_lora()
    wide = {k: np.zeros((v.shape[0] * 2, v.shape[1]) if k.endswith("lora_B.weight") else v.shape, np.float32)
            for k, v in lora.items()}  # B @ A twice as tall as the tiny transformer's weights
    save_file(wide, str(d / "wide-lora.safetensors"), metadata={"reference_downscale_factor": "2"})
    save_file(lora, str(d / "bad-factor.safetensors"), metadata={"reference_downscale_factor": "two"})
    save_file(lora, str(d / "plain-lora.safetensors"))  # no metadata: factor 1
    return d


def base(**fields) -> dict:
    job = {"pipeline": "distilled", "prompt": "a fox", "model": "tiny-2.3", "width": 192, "height": 128,
           "frames": 17, "fps": 24}
    job.update(fields)
    return {k: v for k, v in job.items() if v is not None}


def problems(data: dict, base_dir: Path) -> list[str]:
    with pytest.raises(JobError) as info:
        parse_job(data, base_dir=base_dir)
    return info.value.problems


def only_problem(data: dict, base_dir: Path) -> str:
    found = problems(data, base_dir)
    assert len(found) == 1, found
    return found[0]


# ----------------------------------------------------------------------------- valid jobs

def test_each_workflow_parses_with_paths_from_the_job_folder(folder: Path) -> None:
    job = parse_job(base(images=[{"path": "first.png"}, {"path": "last.png", "frame": 16, "strength": 0.5,
                                                          "crf": 0, "mode": "keyframe"}]), base_dir=folder)
    first, last = job.images
    assert isinstance(first, ImageCond) and first.path == folder / "first.png"
    assert (first.frame, first.strength, first.crf, first.mode, first.use) == (0, 1.0, None, "auto", "replace")
    assert (last.path, last.frame, last.strength, last.crf, last.use) == (folder / "last.png", 16, 0.5, 0, "keyframe")
    assert job.conditioned and (job.video, job.audio, job.retake) == (None, None, None)

    job = parse_job(base(width=256, video={"path": "reference.mp4", "lora": "ic-lora.safetensors",
                                           "mask": "mask.mp4", "attention_strength": 0.8}), base_dir=folder)
    assert isinstance(job.video, VideoCond)
    assert (job.video.path, job.video.lora, job.video.mask) == (folder / "reference.mp4",
                                                                folder / "ic-lora.safetensors", folder / "mask.mp4")
    assert (job.video.lora_strength, job.video.strength, job.video.attention_strength) == (1.0, 1.0, 0.8)
    assert job.reference_downscale_factor == 2 and job.conditioned

    job = parse_job(base(pipeline="two-stage", audio={"path": "voice.wav"}), base_dir=folder)
    assert isinstance(job.audio, AudioCond)
    assert (job.audio.path, job.audio.start, job.audio.max_duration) == (folder / "voice.wav", 0.0, None)
    assert job.reference_downscale_factor == 1

    job = parse_job(base(width=None, height=None, frames=None, fps=None,
                         retake={"path": "source.mp4", "start": 0.4, "end": 0.65}), base_dir=folder)
    assert isinstance(job.retake, RetakeCond)
    assert (job.retake.path, job.retake.start, job.retake.end) == (folder / "source.mp4", 0.4, 0.65)
    assert not parse_job(base(), base_dir=folder).conditioned


def test_a_job_files_media_are_found_beside_it(folder: Path, tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "clip.yaml").write_text(yaml.safe_dump(base(
        pipeline="two-stage", images=[{"path": f"{folder}/first.png"}, {"path": "../m/last.png", "frame": 8}],
        audio={"path": "../m/voice.wav", "start": 0.1})))
    (tmp_path / "m").mkdir()
    for name in ("last.png", "voice.wav"):
        (tmp_path / "m" / name).write_bytes((folder / name).read_bytes())
    job = load_job(jobs / "clip.yaml")
    assert [i.path for i in job.images] == [folder / "first.png", tmp_path / "m" / "last.png"]
    assert job.audio.path == tmp_path / "m" / "voice.wav" and job.audio.start == 0.1


def test_the_ic_loras_downscale_factor_is_read_from_its_header(folder: Path) -> None:
    assert reference_downscale_factor_of(folder / "ic-lora.safetensors") == 2
    assert reference_downscale_factor_of(folder / "plain-lora.safetensors") == 1
    with pytest.raises(BadInputError, match="bad-factor.safetensors: its metadata reference_downscale_factor 'two' is "
                                            "not a whole number >= 1"):
        reference_downscale_factor_of(folder / "bad-factor.safetensors")


# ----------------------------------------------------------------------------- retake: the source's size

def test_a_retake_renders_at_the_sources_size_length_and_rate(folder: Path) -> None:
    window = {"path": "source.mp4", "start": 0.4, "end": 0.65}
    job = parse_job(base(width=None, height=None, frames=None, fps=None, retake=window), base_dir=folder)
    assert (job.width, job.height, job.frames, job.fps) == (96, 64, 25, 24.0)
    # one stage at full size, whatever the pipeline name says
    assert not job.two_stage and job.stage1_size == (96, 64)
    # 30 frames: snapped down to 8k+1
    job = parse_job(base(width=None, height=None, frames=None, fps=None, retake={**window, "path": "thirty.mp4"}),
                    base_dir=folder)
    assert job.frames == 25
    # what the job gives is kept (the source is resized / cut to it); one-stage is the guided retake
    job = parse_job(base(pipeline="one-stage", width=160, height=96, frames=17, fps=None, steps=2, retake=window),
                    base_dir=folder)
    assert (job.width, job.height, job.frames, job.fps, job.two_stage) == (160, 96, 17, 24.0, False)
    # a source of another size is rendered at the size the job gives
    job = parse_job(base(width=96, height=64, frames=None, fps=None,
                         retake={"path": "odd-size.mp4", "start": 0.1, "end": 0.2}), base_dir=folder)
    assert (job.width, job.height, job.frames) == (96, 64, 9)


# ----------------------------------------------------------------------------- one refusal each

REFUSALS = [
    # images
    ({"images": [{"path": "nowhere.png"}]}, ["images.0.path: 'nowhere.png' does not exist",
                                             "relative paths start at the job file's folder"]),
    ({"images": [{"path": "folder.png"}]}, ["images.0.path: 'folder.png' is not a file"]),
    ({"images": [{"path": "broken.png"}]}, ["images.0.path: 'broken.png' cannot be read as a still image"]),
    ({"images": [{"path": "reference.mp4"}]}, ["images.0.path: 'reference.mp4' is a video file, not a still image"]),
    ({"images": [{"path": "voice.wav"}]}, ["images.0.path: 'voice.wav' is an audio file, not a still image"]),
    ({"images": [{"path": "first.png", "frame": 17}]},
     ["images.0.frame: 17 is beyond the clip's last frame (16: frames is 17)", "use a frame in 0..16"]),
    ({"images": [{"path": "first.png"}, {"path": "last.png", "frame": 40, "mode": "keyframe"}]},
     ["images.1.frame: 40 is beyond the clip's last frame (16"]),
    ({"images": [{"path": "first.png", "frame": -1}]}, ["images.0.frame: -1 is not >= 0"]),
    ({"images": [{"path": "first.png", "frame": 4, "mode": "replace"}]},
     ["images.0.frame: 4 is not a multiple of 8, which mode replace needs", "use 0 or 8, or mode keyframe"]),
    ({"images": [{"path": "first.png", "strength": 1.5}]}, ["images.0.strength: 1.5 is not <= 1"]),
    ({"images": [{"path": "first.png", "strength": -0.1}]}, ["images.0.strength: -0.1 is not >= 0"]),
    ({"images": [{"path": "first.png", "crf": 52}]}, ["images.0.crf: 52 is not <= 51"]),
    ({"images": [{"path": "first.png", "crf": -1}]}, ["images.0.crf: -1 is not >= 0"]),
    ({"images": [{"path": "first.png", "mode": "replce"}]},
     ["images.0.mode: 'replce' is not one of auto, replace, keyframe", "did you mean replace?"]),
    ({"images": [{"path": "first.png", "frme": 3}]}, ["images.0.frme: unknown field (value 3)", "did you mean frame?"]),
    ({"images": [{"path": "first.png", "frame": 8}, {"path": "last.png", "frame": 8, "mode": "keyframe"}]},
     ["images.1.frame: 8 is also the frame of images.0: two images on one frame", "give each image its own frame"]),
    ({"images": [{"path": "first.png"}], "temporal_upscale": True},
     ["temporal_upscale: True cannot be combined with images, video, audio or retake", "remove temporal_upscale"]),
    ({"images": [{"path": "first.png"}], "audio": {"path": "voice.wav"}, "temporal_upscale": True},
     ["temporal_upscale: True cannot be combined with images, video, audio or retake"]),  # said once
    # video (IC-LoRA)
    ({"width": 256, "video": {"path": "nowhere.mp4", "lora": "ic-lora.safetensors"}},
     ["video.path: 'nowhere.mp4' does not exist"]),
    ({"width": 256, "video": {"path": "voice.wav", "lora": "ic-lora.safetensors"}},
     ["video.path: 'voice.wav' has no video stream"]),
    ({"width": 256, "video": {"path": "reference.mp4", "lora": "ic-lora.safetensors", "mask": "voice.wav"}},
     ["video.mask: 'voice.wav' has no video stream"]),
    ({"width": 256, "video": {"path": "reference.mp4", "lora": "nowhere.safetensors"}},
     ["video.lora: 'nowhere.safetensors' does not exist"]),
    ({"width": 256, "video": {"path": "reference.mp4", "lora": "UPSAMPLER"}},
     ["video.lora: ", "not a LoRA file", "belongs under spatial_upsampler"]),
    ({"width": 256, "video": {"path": "reference.mp4", "lora": "wide-lora.safetensors"}},
     ["video.lora: ", "wide-lora.safetensors", "does not fit the checkpoint ltx2.3-tiny.safetensors"]),
    ({"width": 256, "video": {"path": "reference.mp4", "lora": "bad-factor.safetensors"}},
     ["video.lora: 'bad-factor.safetensors' is a LoRA, but its metadata reference_downscale_factor 'two' is not a "
      "whole number >= 1"]),
    ({"width": 192, "video": {"path": "reference.mp4", "lora": "ic-lora.safetensors"}},
     ["width: 192 does not fit the IC-LoRA ic-lora.safetensors (reference_downscale_factor 2)",
      "stage 1 renders it at 96 px", "96 / 2 = 48 px, not a multiple of 32", "use 128 or 256"]),
    ({"pipeline": "one-stage", "steps": 2, "width": 96, "height": 96,
      "video": {"path": "reference.mp4", "lora": "ic-lora.safetensors"}},
     ["width: 96 does not fit the IC-LoRA", "the reference is encoded at 96 / 2 = 48 px", "use 64 or 128"]),
    ({"width": 256, "video": {"path": "reference.mp4", "lora": "ic-lora.safetensors", "strength": 2}},
     ["video.strength: 2 is not <= 1"]),
    ({"width": 256, "video": {"path": "reference.mp4", "lora": "ic-lora.safetensors", "attention_strength": -1}},
     ["video.attention_strength: -1 is not >= 0"]),
    ({"width": 256, "video": {"path": "reference.mp4", "lora": "ic-lora.safetensors"}, "audio": {"path": "voice.wav"}},
     ["audio.path: 'voice.wav' cannot be combined with video (an IC-LoRA reference)", "no official pipeline",
      "remove audio or video"]),
    # audio
    ({"audio": {"path": "nowhere.wav"}}, ["audio.path: 'nowhere.wav' does not exist"]),
    ({"audio": {"path": "reference.mp4"}}, ["audio.path: 'reference.mp4' has no audio stream"]),
    ({"frames": 33, "audio": {"path": "voice.wav"}},
     ["audio.path: 'voice.wav' leaves 1.000 s of sound in voice.wav (1.000 s long), shorter than the clip (33 frames "
      "at 24 fps = 1.375 s): the soundtrack must cover the clip", "give a longer sound file, or frames <= 17"]),
    ({"audio": {"path": "voice.wav", "start": 0.5}},
     ["audio.start: 0.5 leaves 0.500 s of sound", "shorter than the clip (17 frames at 24 fps = 0.708 s)",
      "an earlier start, or frames <= 9"]),
    ({"audio": {"path": "voice.wav", "start": 2.0}}, ["audio.start: 2.0 is at or after the end of voice.wav (1.000 s)"]),
    ({"audio": {"path": "voice.wav", "start": -1}}, ["audio.start: -1 is not >= 0"]),
    ({"audio": {"path": "voice.wav", "max_duration": 0.5}},
     ["audio.max_duration: 0.5 s is shorter than the clip (17 frames at 24 fps = 0.708 s)",
      "use max_duration >= 0.709, or leave it out"]),
    ({"audio": {"path": "voice.wav", "max_duration": 0}}, ["audio.max_duration: 0 is not > 0"]),
    # retake
    ({"retake": {"path": "nowhere.mp4", "start": 0.1, "end": 0.2}}, ["retake.path: 'nowhere.mp4' does not exist"]),
    ({"retake": {"path": "reference.mp4", "start": 0.1, "end": 0.2}},
     ["retake.path: 'reference.mp4' has no audio stream"]),
    ({"retake": {"path": "voice.wav", "start": 0.1, "end": 0.2}}, ["retake.path: 'voice.wav' has no video stream"]),
    ({"retake": {"path": "source.mp4", "start": 0.4, "end": 0.4}},
     ["retake.end: 0.4 is not after start (0.4): the window is empty", "give an end later than start"]),
    ({"retake": {"path": "source.mp4", "start": 0.4, "end": 2.0}},
     ["retake.end: 2.0 is beyond the end of source.mp4 (1.042 s)", "use an end of at most 1.042"]),
    ({"retake": {"path": "source.mp4", "start": -0.1, "end": 0.2}}, ["retake.start: -0.1 is not >= 0"]),
    ({"retake": {"path": "source.mp4", "end": 0.2}}, ["retake.start: missing"]),
    ({"pipeline": "two-stage", "retake": {"path": "source.mp4", "start": 0.1, "end": 0.2}},
     ["pipeline: 'two-stage' does not apply to retake (the official RetakePipeline is one stage",
      "use pipeline distilled (distilled sigmas) or one-stage (guided)"]),
    ({"pipeline": "hq", "retake": {"path": "source.mp4", "start": 0.1, "end": 0.2}},
     ["pipeline: 'hq' does not apply to retake"]),
    ({"images": [{"path": "first.png"}], "retake": {"path": "source.mp4", "start": 0.1, "end": 0.2}},
     ["retake.path: 'source.mp4' cannot be combined with images: no official pipeline does"]),
    ({"audio": {"path": "voice.wav"}, "retake": {"path": "source.mp4", "start": 0.1, "end": 0.2}},
     ["retake.path: 'source.mp4' cannot be combined with audio"]),
    ({"frames": 33, "retake": {"path": "source.mp4", "start": 0.1, "end": 0.2}},
     ["frames: 33 is more than retake.path source.mp4 (96x64 px, 25 frames at 24 fps) has", "use at most 25"]),
    ({"frames": 9, "retake": {"path": "source.mp4", "start": 0.4, "end": 0.6}},
     ["retake.start: 0.4 is at or after the end of the clip rendered (9 frames at 24 fps = 0.375 s)"]),
    ({"width": None, "height": None, "retake": {"path": "odd-size.mp4", "start": 0.1, "end": 0.2}},
     ["retake.path: 'odd-size.mp4' is 100x60 px, not multiples of 32", "give width and height (multiples of 32)"]),
    ({"temporal_upscale": True, "retake": {"path": "source.mp4", "start": 0.1, "end": 0.2}},
     ["temporal_upscale: True cannot be combined with images, video, audio or retake"]),
]


@pytest.mark.parametrize("fields, expected", REFUSALS, ids=[str(i) for i in range(len(REFUSALS))])
def test_each_bad_conditioning_field_is_named_with_its_value_and_fix(folder, tiny23, fields, expected) -> None:
    fields = json.loads(json.dumps(fields).replace('"UPSAMPLER"', json.dumps(str(tiny23["spatial_upsampler"]))))
    msg = only_problem(base(**fields), folder)
    for part in expected:
        assert part in msg, msg


def test_conditioning_problems_are_reported_with_the_others(folder: Path) -> None:
    found = problems(base(frames=20, images=[{"path": "first.png", "strength": 2}], audio={"path": "reference.mp4"}),
                     folder)
    assert any(p.startswith("frames: 20 is not 8k+1") for p in found), found
    assert any(p.startswith("images.0.strength: 2 is not <= 1") for p in found), found
    assert any(p.startswith("audio.path: 'reference.mp4' has no audio stream") for p in found), found


def test_a_lora_for_another_model_is_refused_against_real_weight_files(folder: Path, tiny23) -> None:
    """The IC-LoRA is checked against model.checkpoint as model.loras are (here the tiny LTX-2.3 files named)."""
    model = {"checkpoint": str(tiny23["checkpoint"]), "gemma": str(tiny23["gemma"]),
             "spatial_upsampler": str(tiny23["spatial_upsampler"])}
    ok = parse_job(base(model=model, width=256, video={"path": "reference.mp4", "lora": "ic-lora.safetensors"}),
                   base_dir=folder)
    assert ok.video.lora == folder / "ic-lora.safetensors"
    msg = only_problem(base(model=model, width=256, video={"path": "reference.mp4", "lora": "wide-lora.safetensors"}),
                       folder)
    assert msg.startswith("video.lora: ") and "does not fit the checkpoint" in msg, msg


def _job_file(folder: Path, tmp_path: Path, **fields) -> Path:
    job = base(output=str(tmp_path / "out.mp4"), work_dir=str(tmp_path / "work"), **fields)
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({k: (v.replace("MEDIA", str(folder)) if isinstance(v, str) else v)
                                    for k, v in job.items()}))
    return path


@pytest.mark.parametrize("fields, words", [
    ({"images": [{"path": "MISSING/first.png"}]}, ("images.0.path: ", "does not exist")),
    ({"retake": {"path": "SOURCE", "start": 0.9, "end": 0.5}}, ("retake.end: 0.5 is not after start (0.9)",)),
])
def test_a_bad_conditioning_field_stops_plan_and_run_before_any_stage(folder, tmp_path, fields, words) -> None:
    fields = json.loads(json.dumps(fields).replace("MISSING", str(tmp_path / "nowhere"))
                        .replace("SOURCE", str(folder / "source.mp4")))
    job = _job_file(folder, tmp_path, **fields)
    for cmd in ("plan", "run"):
        r = ltx2(cmd, str(job), check=False)
        out = " ".join((r.stdout + r.stderr).split())
        assert r.returncode == 2, (cmd, r.returncode, out)
        assert "Traceback" not in out and all(w in out for w in words), (cmd, out)
    assert not (tmp_path / "work").exists() and not (tmp_path / "out.mp4").exists()


# ----------------------------------------------------------------------------- the examples and their media

@pytest.mark.parametrize("name", WORKFLOWS)
def test_each_conditioning_example_is_a_valid_job(name: str, tiny23) -> None:
    job = load_job(EXAMPLES / f"{name}.yaml")
    assert job.model == "tiny-2.3" and job.conditioned
    assert job.output == EXAMPLES / f"{name}.mp4" and job.work_dir == EXAMPLES / f"{name}.work"
    assert job.width * job.height <= 256 * 128 and job.frames <= 25  # renders in seconds on the tiny model
    if name == "i2v":
        assert [(i.path.name, i.use) for i in job.images] == [("first.png", "replace")]
    if name == "keyframes":
        assert [(i.path.name, i.frame, i.use) for i in job.images] == [("first.png", 0, "keyframe"),
                                                                        ("last.png", job.frames - 1, "keyframe")]
    if name == "ic-lora":
        assert job.reference_downscale_factor == 2 and job.video.mask == MEDIA / "mask.mp4"
    if name == "a2v":
        assert job.audio.path == MEDIA / "voice.wav"
    if name == "retake":
        assert (job.width, job.height, job.frames, job.fps, job.two_stage) == (96, 64, 25, 24.0, False)


def test_the_ic_lora_example_fits_the_tiny_23_checkpoint(tiny23) -> None:
    assert slot_problem(MEDIA / "ic-lora.safetensors", "lora", checkpoint=tiny23["checkpoint"],
                        readers=readers_of) is None
    raw = (MEDIA / "ic-lora.safetensors").read_bytes()
    header = json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])
    assert header["__metadata__"] == {"reference_downscale_factor": "2"}
    assert {k.rsplit(".lora_", 1)[0] for k in header if k != "__metadata__"} == {
        f"diffusion_model.transformer_blocks.{b}.{t}" for b in range(2) for t in
        ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "ff.net.0.proj", "ff.net.2")}


def _frames(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)]).astype(np.int16)


def test_the_shipped_media_are_what_make_media_makes(tmp_path: Path) -> None:
    made = make_media.make(tmp_path)
    shipped = sorted(p.name for p in MEDIA.iterdir() if p.suffix != ".py")
    assert sorted(p.name for p in made) == shipped
    assert sum(p.stat().st_size for p in EXAMPLES.rglob("*") if p.is_file() and p.parent.name == "media") < 1 << 20
    for name in ("voice.wav", "ic-lora.safetensors"):  # written byte by byte by make_media
        assert (MEDIA / name).read_bytes() == (tmp_path / name).read_bytes(), name
    for name in ("first.png", "last.png"):  # the pixels (zlib builds may pack them differently)
        assert np.array_equal(np.asarray(Image.open(MEDIA / name)), np.asarray(Image.open(tmp_path / name))), name
    for name in ("source.mp4", "reference.mp4", "mask.mp4"):  # H.264: the same picture, whatever the x264 build
        a, b = _frames(MEDIA / name), _frames(tmp_path / name)
        assert a.shape == b.shape and np.abs(a - b).mean() < 2.0, name
    with av.open(str(MEDIA / "source.mp4")) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height, c.streams.audio[0].channels) == (96, 64, 2)
    assert _frames(MEDIA / "source.mp4").shape[0] == 25
