"""Zarr artifacts: round trips, refusals with clear messages, hashes, lazy slices, crash-safe resume, locks."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from zarr.storage import LocalStore

from ltx2.artifacts_schema import (SCHEMA_VERSION, ArtifactError, ArtifactLock, ArtifactWriter, Producer, lock_artifact,
                                   open_artifact, partial_path, summarize)
from ltx2.artifacts_schema.store import read_group_attrs

PRODUCER = Producer("denoise", "1")


def bits(x) -> np.ndarray:
    """Raw bits of an MLX array, for bit-for-bit comparisons (bfloat16 included)."""
    if x.dtype == mx.bfloat16:
        return np.array(x.view(mx.uint16))
    return np.array(x)


def rand(shape, seed, dtype=mx.float32):
    return mx.array(np.random.default_rng(seed).standard_normal(shape).astype(np.float32)).astype(dtype)


def writer(path, kind, **kw):
    kw.setdefault("producer", PRODUCER)
    kw.setdefault("cache_key", "key-" + kind)
    return ArtifactWriter(path, kind, **kw)


def latents_facts(**over):
    return {"frame_count": 33, "height": 64, "width": 96, "fps": 24.0, "sigma": 0.0, "step": 8, "total_steps": 8,
            **over}


def write_latents(path, video, audio, **facts) -> Path:
    w = writer(path, "latents", input_keys={"text": "tk", "noise": "nk"}, params={"seed": 42, "steps": 8})
    w.write_array("video", video)
    w.write_array("audio", audio)
    return w.finalize(latents_facts(**facts))


def chunk_file(art_path: Path, array: str, time_index: int, rank: int, time_axis: int) -> Path:
    idx = ["0"] * rank
    idx[time_axis] = str(time_index)
    return art_path / array / "c" / Path(*idx)


def set_attrs(path: Path, **changes):
    meta = path / "zarr.json"
    doc = json.loads(meta.read_text())
    for k, v in changes.items():
        if v is None:
            doc["attributes"].pop(k, None)
        else:
            doc["attributes"][k] = v
    meta.write_text(json.dumps(doc))


# ---- round trips ---------------------------------------------------------------------------------

def _text():
    mask = np.zeros((1, 12), np.int64)
    mask[:, 4:] = 1
    arrays = {"video_context": rand((1, 12, 32), 1, mx.bfloat16), "audio_context": rand((1, 12, 16), 2),
              "attention_mask": mx.array(mask), "negative_video_context": rand((1, 12, 32), 3, mx.bfloat16),
              "negative_audio_context": rand((1, 12, 16), 4), "negative_attention_mask": mx.array(mask > 0)}
    return arrays, {"sequence_length": 12, "has_negative": True}


def _conditioning():
    return {"video": rand((1, 8, 1, 4, 6), 5, mx.bfloat16)}, {"medium": "image", "source_sha256": "0" * 64, "width": 96, "height": 64, "frame_count": 9, "fps": 24.0}


def _latents():
    return {"video": rand((1, 8, 5, 4, 6), 6, mx.bfloat16), "audio": rand((1, 8, 21, 16), 7)}, latents_facts()


def _frames():
    v = np.random.default_rng(8).integers(0, 256, (5, 16, 24, 3), dtype=np.uint8)
    return {"video": mx.array(v)}, {"frame_count": 5, "height": 16, "width": 24, "fps": 25.0}


def _audio():
    wav = rand((2, 70000), 9) * 0.1  # crosses the 65536-sample chunk boundary
    return {"waveform": wav}, {"sample_rate": 48000, "channels": 2, "sample_count": 70000}


@pytest.mark.parametrize("kind,build", [("text", _text), ("conditioning", _conditioning), ("latents", _latents),
                                        ("frames", _frames), ("audio", _audio)])
def test_round_trip_every_kind_bit_for_bit(tmp_path, kind, build):
    arrays, facts = build()
    path = tmp_path / f"{kind}.zarr"
    w = writer(path, kind, input_keys={"up": "k0"}, params={"seed": 7, "prompt": "a cat"})
    for name, data in arrays.items():
        w.write_array(name, data)
    assert w.finalize(facts) == path
    assert not partial_path(path).exists()

    art = open_artifact(path, kind, verify=True)
    assert (art.kind, art.schema_version, art.producer) == (kind, SCHEMA_VERSION, PRODUCER)
    assert art.cache_key == "key-" + kind and art.input_keys == {"up": "k0"}
    assert art.params == {"seed": 7, "prompt": "a cat"} and art.facts == facts
    assert set(art.arrays) == set(arrays) and art.verified == set(arrays)
    for name, data in arrays.items():
        got = art.read(name)
        assert got.dtype == data.dtype and got.shape == data.shape
        np.testing.assert_array_equal(bits(got), bits(data))
    attrs = read_group_attrs(path)
    assert attrs["schema"] == "ltx2.artifact" and attrs["complete"] is True
    assert all(len(a["sha256"]) == 64 for a in attrs["arrays"].values())


def test_bfloat16_is_stored_as_uint16_bits_and_reads_as_float32_numpy(tmp_path):
    video = rand((1, 4, 3, 2, 2), 11, mx.bfloat16)
    path = write_latents(tmp_path / "l.zarr", video, rand((1, 8, 4, 16), 12))
    arr_meta = json.loads((path / "video" / "zarr.json").read_text())
    assert arr_meta["data_type"] == "uint16" and arr_meta["attributes"]["logical_dtype"] == "bfloat16"
    assert arr_meta["chunk_grid"]["configuration"]["chunk_shape"] == [1, 4, 1, 2, 2]  # one chunk per latent frame
    art = open_artifact(path, "latents")
    as_f32 = art.read_numpy("video")
    assert as_f32.dtype == np.float32
    np.testing.assert_array_equal(as_f32, np.array(video.astype(mx.float32)))
    # float32 input asked to be stored as bfloat16 rounds exactly like MLX does
    w = writer(tmp_path / "c.zarr", "conditioning")
    f32 = rand((1, 4, 2, 2, 2), 13)
    w.write_array("video", np.array(f32), logical_dtype="bfloat16")
    art = open_artifact(w.finalize({**_conditioning()[1], "medium": "video"}))
    np.testing.assert_array_equal(bits(art.read("video")), bits(f32.astype(mx.bfloat16)))


# ---- refusals ------------------------------------------------------------------------------------

def test_partial_is_refused(tmp_path):
    path = tmp_path / "stage1.zarr"
    w = writer(path, "latents")
    w.write_array("video", rand((1, 4, 3, 2, 2), 1))
    with pytest.raises(ArtifactError) as e:
        open_artifact(path, "latents")
    assert e.value.reason == "partial" and str(path) in str(e.value)
    assert "stage1.zarr.partial" in str(e.value) and "re-run the stage that produces it" in str(e.value)
    with pytest.raises(ArtifactError, match="is a partial artifact") as e:
        open_artifact(partial_path(path))
    assert e.value.reason == "partial"
    with pytest.raises(ArtifactError, match="does not exist") as e:
        open_artifact(tmp_path / "nothing.zarr")
    assert e.value.reason == "missing"
    s = summarize(path)
    assert s.state == "partial" and s.kind == "latents"


def test_tampered_chunk_is_a_hash_mismatch_naming_the_array(tmp_path):
    video = rand((1, 4, 6, 8, 8), 2)
    path = write_latents(tmp_path / "l.zarr", video, rand((1, 8, 10, 16), 3))
    chunk = chunk_file(path, "video", 3, 5, 2)
    raw = bytearray(chunk.read_bytes())
    raw[100] ^= 0x01
    chunk.write_bytes(bytes(raw))

    art = open_artifact(path, "latents")  # structure is fine; bytes are checked when read
    np.testing.assert_array_equal(bits(art.read("video", time=(0, 3))), bits(video[:, :, 0:3]))
    for read in (lambda: art.read("video"), lambda: art.read("video", time=(2, 4)), art.verify,
                 lambda: open_artifact(path, verify=True)):
        with pytest.raises(ArtifactError) as e:
            read()
        assert e.value.reason == "hash_mismatch"
        assert "hash mismatch on array 'video'" in str(e.value) and "time steps 3:4" in str(e.value)
        assert str(path) in str(e.value) and "delete it and run again" in str(e.value)
    s = summarize(path)
    assert s.state == "invalid" and s.hashes.startswith("mismatch") and "'video'" in s.hashes


def test_tampered_compressed_frames_are_refused(tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    w = writer(tmp_path / "f.zarr", "frames")
    w.write_array("video", frames)
    path = w.finalize({"frame_count": 4, "height": 8, "width": 8, "fps": 24.0})
    # A well-formed zstd chunk with other content (frame 0's) where frame 2 belongs:
    c0, c2 = chunk_file(path, "video", 0, 4, 0), chunk_file(path, "video", 2, 4, 0)
    c2.write_bytes(c0.read_bytes())
    with pytest.raises(ArtifactError, match=r"hash mismatch on array 'video' \(time steps 2:3"):
        open_artifact(path, "frames").read("video")
    # Garbage that does not even decompress:
    c2.write_bytes(b"\x00garbage" * 8)
    with pytest.raises(ArtifactError, match="array 'video' is corrupt") as e:
        open_artifact(path, "frames").read_numpy("video", time=(2, 3))
    assert e.value.reason == "hash_mismatch"


def test_unknown_schema_version_and_wrong_kind_are_refused_clearly(tmp_path):
    frames = np.zeros((2, 4, 4, 3), np.uint8)
    w = writer(tmp_path / "f.zarr", "frames")
    w.write_array("video", frames)
    path = w.finalize({"frame_count": 2, "height": 4, "width": 4, "fps": 24.0})

    with pytest.raises(ArtifactError) as e:
        open_artifact(path, "latents")
    assert e.value.reason == "wrong_kind"
    assert "wrong kind: expected latents, found frames" in str(e.value) and str(path) in str(e.value)

    set_attrs(path, schema_version=7)
    with pytest.raises(ArtifactError) as e:
        open_artifact(path, "frames")
    assert e.value.reason == "schema_version"
    assert f"unknown schema version 7 (this build reads {SCHEMA_VERSION})" in str(e.value)
    assert "re-run the stage that produces it (decode)" in str(e.value)

    set_attrs(path, schema_version=SCHEMA_VERSION, schema="something.else")
    with pytest.raises(ArtifactError, match="is not an ltx2 artifact"):
        open_artifact(path)


def test_missing_attribute_fact_or_array_is_named(tmp_path):
    path = write_latents(tmp_path / "l.zarr", rand((1, 4, 3, 2, 2), 1), rand((1, 8, 4, 16), 2))
    original = (path / "zarr.json").read_text()

    set_attrs(path, cache_key=None)
    with pytest.raises(ArtifactError, match="missing attribute 'cache_key'"):
        open_artifact(path, "latents")

    (path / "zarr.json").write_text(original)
    attrs = read_group_attrs(path)
    set_attrs(path, facts={k: v for k, v in attrs["facts"].items() if k != "sigma"})
    with pytest.raises(ArtifactError, match="missing fact 'sigma'"):
        open_artifact(path, "latents")

    (path / "zarr.json").write_text(original)
    set_attrs(path, arrays={k: v for k, v in attrs["arrays"].items() if k != "audio"})
    with pytest.raises(ArtifactError, match="missing array 'audio' required by kind latents"):
        open_artifact(path, "latents")

    (path / "zarr.json").write_text(original)
    set_attrs(path, complete=False)
    with pytest.raises(ArtifactError, match="not marked complete") as e:
        open_artifact(path)
    assert e.value.reason == "partial"

    (path / "zarr.json").write_text(original)
    os.rename(path / "audio", tmp_path / "audio_moved")
    with pytest.raises(ArtifactError, match="missing array 'audio'"):
        open_artifact(path, "latents")


def test_writer_refuses_what_the_kind_does_not_allow(tmp_path):
    w = writer(tmp_path / "l.zarr", "latents")
    with pytest.raises(ArtifactError, match="kind latents has no array 'noise'") as e:
        w.write_array("noise", rand((1, 4, 3, 2, 2), 1))
    assert e.value.reason == "bad_write" and "bug in the stage" in str(e.value)
    with pytest.raises(ArtifactError, match="must have rank 5"):
        w.write_array("video", rand((4, 3, 2, 2), 1))
    with pytest.raises(ArtifactError, match="must be float32 or bfloat16 or float16, got int32"):
        w.write_array("video", mx.zeros((1, 4, 3, 2, 2), dtype=mx.int32))
    with pytest.raises(ArtifactError, match="float64 is not one artifacts store"):
        w.write_array("video", np.zeros((1, 4, 3, 2, 2)))
    w.write_array("video", rand((1, 4, 3, 2, 2), 1))
    with pytest.raises(ArtifactError, match="missing array 'audio'"):
        w.finalize(latents_facts())
    w.write_array("audio", rand((1, 8, 4, 16), 1))
    with pytest.raises(ArtifactError, match="missing fact 'fps'"):
        w.finalize({k: v for k, v in latents_facts().items() if k != "fps"})
    with pytest.raises(ArtifactError, match="fact 'step' is True"):
        w.finalize(latents_facts(step=True))
    with pytest.raises(ArtifactError, match="not plain JSON"):
        w.finalize(latents_facts(sigma=float("nan")))
    f = writer(tmp_path / "f.zarr", "frames")
    f.write_array("video", np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(ArtifactError, match=r"\(frame_count, height, width, 3\) = \(3, 4, 4, 3\)"):
        f.finalize({"frame_count": 3, "height": 4, "width": 4, "fps": 24.0})


def test_stale_partials_and_targets_are_replaced(tmp_path):
    path = tmp_path / "l.zarr"
    old = write_latents(path, rand((1, 4, 3, 2, 2), 1), rand((1, 8, 4, 16), 2))
    assert old == path
    # a crashed earlier write
    w = writer(path, "latents")
    w.checkpoint(1, arrays={"video": rand((1, 4, 3, 2, 2), 3), "audio": rand((1, 8, 4, 16), 3)})
    # a non-resumable writer discards it ...
    w2 = writer(path, "latents")
    assert w2.discarded == "this stage does not resume" and w2.progress is None
    w2.checkpoint(1, arrays={"video": rand((1, 4, 3, 2, 2), 3), "audio": rand((1, 8, 4, 16), 3)})
    # ... and so does a resumable one whose cache key differs (another seed, say)
    w3 = writer(path, "latents", cache_key="other", resume=True)
    assert not w3.resumed and "cache_key" in w3.discarded and w3.progress is None
    new_video = rand((1, 4, 5, 2, 2), 4)
    w3.write_array("video", new_video)
    w3.write_array("audio", rand((1, 8, 4, 16), 4))
    w3.finalize(latents_facts())
    art = open_artifact(path, "latents", verify=True)  # the old finished target was replaced
    assert art.cache_key == "other" and art.shape("video") == (1, 4, 5, 2, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["l.zarr"]


def test_finished_partial_whose_rename_was_cut_off_is_renamed_on_resume(tmp_path):
    path = write_latents(tmp_path / "l.zarr", rand((1, 4, 3, 2, 2), 1), rand((1, 8, 4, 16), 2))
    os.rename(path, partial_path(path))  # as if killed between completing and renaming
    with pytest.raises(ArtifactError, match="only l.zarr.partial exists"):
        open_artifact(path)
    w = writer(path, "latents", resume=True)
    assert w.resumed and w.complete
    w.finalize()
    open_artifact(path, "latents", verify=True)


def test_summary_for_inspect(tmp_path):
    path = write_latents(tmp_path / "l.zarr", rand((1, 4, 3, 2, 2), 1, mx.bfloat16), rand((1, 8, 4, 16), 2))
    s = summarize(path)
    assert (s.state, s.hashes, s.kind, s.schema_version) == ("complete", "verified", "latents", SCHEMA_VERSION)
    assert s.producer == {"stage": "denoise", "version": "1"} and s.params == {"seed": 42, "steps": 8}
    assert s.input_keys == {"text": "tk", "noise": "nk"} and s.facts["sigma"] == 0.0
    video = {a.name: a for a in s.arrays}["video"]
    assert (video.shape, video.logical_dtype, video.stored_dtype) == ((1, 4, 3, 2, 2), "bfloat16", "uint16")
    assert video.chunks == (1, 4, 1, 2, 2) and video.compression == "none" and video.nbytes == 96
    assert json.dumps(s.to_dict(), default=list)  # printable as JSON by `ltx2 inspect --json`

    w = writer(tmp_path / "f.zarr", "frames")
    w.create_array("video", (4, 8, 8, 3), "uint8")
    w.write_frames("video", 0, np.zeros((2, 8, 8, 3), np.uint8))
    w.checkpoint(3, facts={"fps": 24.0})
    s = summarize(tmp_path / "f.zarr")
    assert s.state == "partial" and s.progress["step"] == 3 and s.progress["frames_written"] == {"video": 2}
    assert s.arrays[0].compression == "ZstdCodec(level=1)" and s.arrays[0].chunks == (1, 8, 8, 3)


def test_corrupt_checkpoint_is_refused_on_resume(tmp_path):
    path = tmp_path / "l.zarr"
    w = writer(path, "latents", resume=True)
    w.checkpoint(1, arrays={"video": rand((1, 4, 3, 2, 2), 1), "audio": rand((1, 8, 4, 16), 1)})
    chunk = partial_path(path) / "_steps" / "000001" / "video" / "c" / "0" / "0" / "1" / "0" / "0"
    chunk.write_bytes(bytes(b ^ 0xFF for b in chunk.read_bytes()))
    w = writer(path, "latents", resume=True)
    with pytest.raises(ArtifactError, match="hash mismatch on array 'video'") as e:
        w.load_checkpoint()
    assert e.value.reason == "hash_mismatch" and "l.zarr.partial" in str(e.value)


# ---- lazy slices ---------------------------------------------------------------------------------

def test_time_slice_reads_only_its_chunks(tmp_path, monkeypatch):
    video = rand((1, 32, 40, 24, 24), 5)  # ~2.9 MB, 40 chunks of one latent frame each
    path = write_latents(tmp_path / "l.zarr", video, rand((1, 8, 600, 16), 6))
    # Destroy every chunk except frames 10..14: a slice that touched any other chunk would fail.
    rng = np.random.default_rng(0)
    for t in [*range(0, 10), *range(15, 40)]:
        f = chunk_file(path, "video", t, 5, 2)
        f.write_bytes(rng.integers(0, 256, f.stat().st_size, dtype=np.uint8).tobytes())
    art = open_artifact(path, "latents")
    opened = []
    real_get = LocalStore.get

    async def spy_get(self, key, *args, **kwargs):
        opened.append(key)
        return await real_get(self, key, *args, **kwargs)

    monkeypatch.setattr(LocalStore, "get", spy_get)
    np.testing.assert_array_equal(bits(art.read("video", time=(10, 15))), bits(video[:, :, 10:15]))
    assert sorted(k for k in opened if k.startswith("c/")) == [f"c/0/0/{t}/0/0" for t in range(10, 15)]
    np.testing.assert_array_equal(art.read_numpy("video", time=slice(12, 14)), np.array(video[:, :, 12:14]))
    assert art.read("video", time=(11, 11)).shape == (1, 32, 0, 24, 24)
    assert art.verified == set()  # no whole array was read
    with pytest.raises(ArtifactError, match="time steps 9:10"):
        art.read("video", time=(9, 11))
    with pytest.raises(ValueError, match="outside array 'video'"):
        art.read("video", time=(38, 41))
    # Audio latents come in chunks of 256 latent frames; a slice inside the second reads just it.
    aud = art.read("audio", time=(300, 310))
    assert aud.shape == (1, 8, 10, 16)


# ---- resumable writers ---------------------------------------------------------------------------

CHILD = textwrap.dedent("""
    import sys
    import mlx.core as mx, numpy as np
    from ltx2.artifacts_schema import ArtifactWriter, Producer

    def state(step):
        rng = np.random.default_rng(step)
        video = mx.array(rng.standard_normal((1, 32, 8, 32, 32)).astype(np.float32)).astype(mx.bfloat16)
        audio = mx.array(rng.standard_normal((1, 8, 40, 16)).astype(np.float32))
        return {"video": video, "audio": audio}

    w = ArtifactWriter(sys.argv[1], "latents", producer=Producer("denoise", "1"), cache_key="k", resume=True)
    step = w.progress.step if w.progress else 0
    if step:
        got = w.load_checkpoint()
        assert all(mx.array_equal(got[k], v).item() for k, v in state(step).items()), "bad resume"
    while True:  # the parent kills us
        step += 1
        w.checkpoint(step, arrays=state(step), facts={"sigma": 1.0 / step, "step": step})
""")


def _expected_state(step):
    rng = np.random.default_rng(step)
    video = mx.array(rng.standard_normal((1, 32, 8, 32, 32)).astype(np.float32)).astype(mx.bfloat16)
    return {"video": video, "audio": mx.array(rng.standard_normal((1, 8, 40, 16)).astype(np.float32))}


def _committed_step(partial: Path) -> int:
    try:
        p = read_group_attrs(partial).get("progress")
    except ArtifactError:
        return 0
    return p["step"] if p else 0


def test_resumable_writer_survives_kill_9_at_random_times(tmp_path):
    path = tmp_path / "stage1.zarr"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    last = 0
    for _ in range(3):
        child = subprocess.Popen([sys.executable, str(script), str(path)], stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 60
            while _committed_step(partial_path(path)) < max(3, last + 2):  # it (re)started and wrote steps
                assert child.poll() is None, child.stderr.read().decode()
                assert time.monotonic() < deadline, "child made no progress"
                time.sleep(0.01)
            time.sleep(random.uniform(0.0, 0.15))
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
            child.stderr.close()
        w = writer(path, "latents", cache_key="k", resume=True)
        assert w.resumed, w.discarded
        step = w.progress.step
        assert step >= max(3, last + 2)
        got = w.load_checkpoint()
        for name, want in _expected_state(step).items():
            np.testing.assert_array_equal(bits(got[name]), bits(want))
        assert w.progress.facts == {"sigma": 1.0 / step, "step": step}
        steps_dirs = [p.name for p in (partial_path(path) / "_steps").iterdir() if p.is_dir()]
        assert steps_dirs == [f"{step:06d}"]  # a torn next step was cleaned up
        last = step
    w = writer(path, "latents", cache_key="k", resume=True)
    w.checkpoint(last + 1, arrays=_expected_state(last + 1), facts={"sigma": 0.0, "step": last + 1})
    out = w.finalize({"frame_count": 57, "height": 256, "width": 256, "fps": 24.0, "total_steps": last + 1})
    art = open_artifact(out, "latents", verify=True)
    assert art.facts["step"] == last + 1 and not (out / "_steps").exists()
    np.testing.assert_array_equal(bits(art.read("video")), bits(_expected_state(last + 1)["video"]))


def test_streamed_frames_resume_from_the_last_checkpoint(tmp_path):
    frames = np.random.default_rng(1).integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    path = tmp_path / "frames.zarr"
    w = writer(path, "frames", resume=True)
    w.create_array("video", frames.shape, "uint8")
    w.write_frames("video", 0, frames[0:2])
    w.checkpoint(0, facts={"fps": 24.0})
    w.write_frames("video", 2, frames[2:4])
    w.checkpoint(1, extra={"tile": 1})
    with pytest.raises(ArtifactError, match="appended in order; next is 4, got 5"):
        w.write_frames("video", 5, frames[5:6])
    w.write_frames("video", 4, 255 - frames[4:5])  # written but never checkpointed: must be redone
    del w  # "crash"

    w = writer(path, "frames", resume=True)
    assert w.resumed and w.progress.step == 1 and w.progress.extra == {"tile": 1}
    assert w.frames_written("video") == 4 and w.progress.frames_written == {"video": 4}
    w.create_array("video", frames.shape, "uint8")  # no-op on resume
    w.write_frames("video", 4, frames[4:6])
    art = open_artifact(w.finalize({"frame_count": 6, "height": 8, "width": 8}), "frames", verify=True)
    assert art.facts["fps"] == 24.0
    np.testing.assert_array_equal(art.read_numpy("video"), frames)


# ---- locking -------------------------------------------------------------------------------------

LOCK_CHILD = textwrap.dedent("""
    import sys, time
    from ltx2.artifacts_schema import lock_artifact
    lock = lock_artifact(sys.argv[1])
    print("locked", flush=True)
    time.sleep(60)
""")


def test_second_lock_holder_times_out_with_a_clear_message_then_gets_it(tmp_path):
    path = tmp_path / "stage1.zarr"
    script = tmp_path / "lock_child.py"
    script.write_text(LOCK_CHILD)
    child = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline().strip() == b"locked"
        t0 = time.monotonic()
        with pytest.raises(ArtifactError) as e:
            ArtifactLock(path, timeout=0.3).acquire()
        assert 0.3 <= time.monotonic() - t0 < 5
        msg = str(e.value)
        assert e.value.reason == "locked" and str(path) in msg
        assert "locked by another run" in msg and f"pid {child.pid}" in msg and "stage1.zarr.lock" in msg
        assert "wait for that run to finish" in msg
    finally:
        os.kill(child.pid, signal.SIGKILL)  # the kernel drops a dead holder's flock
        child.wait()
        child.stdout.close()
    with ArtifactLock(path, timeout=5) as lock:
        assert lock.held
        with pytest.raises(ArtifactError, match="locked by another run"):
            lock_artifact(path, timeout=0)
    assert not lock.held
    with lock_artifact(path, timeout=0):
        pass
