"""A decode interrupted at any point resumes to exactly the artifact an uninterrupted decode writes.

The decode stage streams frames into frames.zarr one temporal tile group at a time and checkpoints after
each. Killed after any checkpoint (a simulated crash: the process stops right after the checkpoint is
durable), or failing with a full disk at any write, it must resume to the same bytes: the same frames and
the same artifact attributes (hashes, facts, records), for temporal tiling, spatial tiling, both, and a
timestep-conditioned VAE (whose decode draws noise per tile).
"""

from __future__ import annotations

import copy
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ltx2.artifacts_schema import ArtifactWriter, Producer, open_artifact, writer as writer_module
from ltx2.models.layouts import shapes
from ltx2.models.tiny import configs as tiny_configs
from ltx2.models.tiny.weights import init_tensor, write_safetensors
from ltx2.models.video_vae import VideoDecoder, VideoVAEConfig, load_video_decoder
from ltx2.models.video_vae.loading import to_checkpoint
from ltx2.spec.errors import EXIT_NO_SPACE
from ltx2.stages import decode
from ltx2.stages.base import execute

SEED = 11

# name -> (decode tiling, latent (frames, height, width)). 16-frame tiles overlapping by 8 (2 latent frames, 1
# shared) make 4 groups of 5 latent frames, each overlapping the next two (every tile after the first starts a
# latent frame early); 24/8-frame tiles make 3 groups of 7, each overlapping only its neighbours; 64-px tiles
# overlapping by 32 make 2x2 tiles of a 3x3 latent (2x1 of a 3x2 one). Latents as small as that allows.
CASES = {
    "temporal": ({"temporal_tile": 16, "temporal_overlap": 8}, (5, 2, 2)),
    "temporal-wide": ({"temporal_tile": 24, "temporal_overlap": 8}, (7, 2, 2)),
    "spatial": ({"spatial_tile": 64, "spatial_overlap": 32}, (2, 3, 3)),
    "both": ({"spatial_tile": 64, "spatial_overlap": 32, "temporal_tile": 16, "temporal_overlap": 8}, (5, 3, 2)),
    "both-long": ({"spatial_tile": 64, "spatial_overlap": 32, "temporal_tile": 16, "temporal_overlap": 8}, (9, 3, 2)),
}
TILINGS = {name: tiling for name, (tiling, _) in CASES.items()}


class Killed(BaseException):
    """A simulated kill -9: escapes the stage's error handling, as a dead process runs no handler."""


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(autouse=True)
def _no_fsync(monkeypatch):
    """In-process crashes lose nothing a flush would keep: skip the (slow) fsyncs here; the kill -9 test keeps them."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)


def make_latents(path: Path, f: int, h: int, w: int) -> Path:
    rng = np.random.default_rng(5)
    wr = ArtifactWriter(path, "latents", producer=Producer("denoise", "1"), cache_key="latents-key",
                        params={"seed": SEED})
    wr.write_array("video", rng.standard_normal((1, tiny_configs.VIDEO_LATENT_CHANNELS, f, h, w)).astype(np.float32))
    wr.write_array("audio", rng.standard_normal((1, 2, 6, 16)).astype(np.float32))
    wr.finalize(facts={"frame_count": 8 * (f - 1) + 1, "height": 32 * h, "width": 32 * w, "fps": 24.0,
                       "sigma": 0.0, "step": 1, "total_steps": 1})
    return path


@pytest.fixture(scope="module")
def latents(tmp_path_factory):
    """tiling name -> its latents artifact (made on first use)."""
    made: dict[str, Path] = {}

    def get(tiling: str) -> Path:
        if tiling not in made:
            made[tiling] = make_latents(tmp_path_factory.mktemp("latents") / "latents.zarr", *CASES[tiling][1])
        return made[tiling]

    return get


def narrow_vae_checkpoint(path: Path, timestep_conditioning: bool) -> Path:
    """The tiny checkpoint's video VAE at half its decoder width (4x less work), timestep-conditioned or not,
    its weights drawn as the tiny model draws its own (the scalar timestep multiplier: the official 1000)."""
    cfg = copy.deepcopy(tiny_configs.checkpoint_config())
    cfg["vae"].update(decoder_base_channels=4, timestep_conditioning=timestep_conditioning)
    layout = shapes(to_checkpoint(decoder=VideoDecoder(VideoVAEConfig.from_config(cfg))))
    tensors = {k: init_tensor("resume-test", k, s) if s else np.full(s, 1000.0, np.float32) for k, s in layout.items()}
    write_safetensors(path, tensors, {"config": json.dumps(cfg)}, dtype="F32")
    assert load_video_decoder(path).needs_noise == timestep_conditioning
    return path


@pytest.fixture(scope="module")
def vaes(tmp_path_factory) -> dict[str, dict[str, Path] | None]:
    """VAE name -> the decode's weights: "tiny" the tiny model's own; "plain" a narrower copy; "tsc" the narrower
    copy timestep-conditioned (it blends noise, drawn per tile, into each tile's latent)."""
    folder = tmp_path_factory.mktemp("vaes")
    return {"tiny": None,
            "plain": {"checkpoint": narrow_vae_checkpoint(folder / "plain.safetensors", False)},
            "tsc": {"checkpoint": narrow_vae_checkpoint(folder / "tsc.safetensors", True)}}


def run_decode(latents: Path, out: Path, tiling: dict, weights: dict | None) -> int:
    return execute("decode", [(None, latents)], out, {"tiling": tiling}, weights, None, None, None)


def tree_bytes(folder: Path) -> dict[str, bytes]:
    """Every file of an artifact folder by relative path: the frames' chunks and every zarr.json (attrs)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_same_artifact(got: Path, want: Path) -> None:
    a, b = open_artifact(got), open_artifact(want)
    np.testing.assert_array_equal(np.asarray(a.read("video")), np.asarray(b.read("video")))
    assert json.loads((got / "zarr.json").read_text()) == json.loads((want / "zarr.json").read_text())
    ga, gb = tree_bytes(got), tree_bytes(want)
    assert sorted(ga) == sorted(gb)
    assert [k for k in ga if ga[k] != gb[k]] == []
    a.verify()


@pytest.fixture(scope="module")
def reference(latents, vaes, tmp_path_factory):
    """Uninterrupted decodes, one per (tiling, vae), made on first use; with how many checkpoints each took."""
    made: dict[tuple[str, str], tuple[Path, int]] = {}

    def get(tiling: str, vae: str) -> tuple[Path, int]:
        if (tiling, vae) not in made:
            out = tmp_path_factory.mktemp(f"ref-{tiling}-{vae}") / "frames.zarr"
            calls = []
            original = ArtifactWriter.checkpoint

            def counting(self, *a, **kw):
                calls.append(a[0] if a else kw["step"])
                return original(self, *a, **kw)

            mp = pytest.MonkeyPatch()
            mp.setattr(ArtifactWriter, "checkpoint", counting)
            try:
                assert run_decode(latents(tiling), out, TILINGS[tiling], vaes[vae]) == 0
            finally:
                mp.undo()
            made[tiling, vae] = out, len(calls)
        return made[tiling, vae]

    return get


# ------------------------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("tiling,vae", [("temporal", "tiny"), ("temporal-wide", "plain"), ("spatial", "plain"),
                                        ("both", "plain"), ("temporal", "tsc"), ("both", "tsc")])
def test_resume_after_every_checkpoint_equals_the_uninterrupted_decode(tiling, vae, latents, vaes,
                                                                       reference, tmp_path, monkeypatch):
    want, checkpoints = reference(tiling, vae)
    assert checkpoints >= 3 or tiling == "spatial"  # several tile groups (spatial tiling: one group)
    original = ArtifactWriter.checkpoint
    for kill_after in range(1, checkpoints + 1):
        out = tmp_path / f"kill{kill_after}" / "frames.zarr"
        seen = []

        def crashing(self, *a, **kw):
            original(self, *a, **kw)
            seen.append(1)
            if len(seen) == kill_after:
                raise Killed

        monkeypatch.setattr(ArtifactWriter, "checkpoint", crashing)
        with pytest.raises(Killed):
            run_decode(latents(tiling), out, TILINGS[tiling], vaes[vae])
        monkeypatch.setattr(ArtifactWriter, "checkpoint", original)
        assert not out.exists() and Path(str(out) + ".partial").exists()
        assert run_decode(latents(tiling), out, TILINGS[tiling], vaes[vae]) == 0
        assert_same_artifact(out, want)


def test_a_resumed_decode_can_be_interrupted_again(latents, vaes, reference, tmp_path, monkeypatch):
    """Killed after its 1st checkpoint, then the resumed run after its next one, then resumed to the end."""
    want, checkpoints = reference("both", "tsc")
    out = tmp_path / "frames.zarr"
    original = ArtifactWriter.checkpoint
    for _ in range(2):
        def crashing(self, *a, **kw):
            original(self, *a, **kw)
            raise Killed

        monkeypatch.setattr(ArtifactWriter, "checkpoint", crashing)
        with pytest.raises(Killed):
            run_decode(latents("both"), out, TILINGS["both"], vaes["tsc"])
    monkeypatch.setattr(ArtifactWriter, "checkpoint", original)
    assert run_decode(latents("both"), out, TILINGS["both"], vaes["tsc"]) == 0
    assert_same_artifact(out, want)


def test_killed_in_finalize_before_the_rename_resumes_to_the_same_artifact(latents, vaes, reference, tmp_path,
                                                                           monkeypatch):
    """Killed once the finished partial is marked complete but before it is renamed: the rerun only renames it."""
    want, _ = reference("temporal", "tsc")
    out = tmp_path / "frames.zarr"

    def killed(*a, **kw):
        raise Killed

    monkeypatch.setattr(writer_module, "replace_dir", killed)
    with pytest.raises(Killed):
        run_decode(latents("temporal"), out, TILINGS["temporal"], vaes["tsc"])
    monkeypatch.undo()
    monkeypatch.setattr(os, "fsync", lambda fd: None)
    monkeypatch.setattr(decode, "load_video_decoder", killed)  # nothing is decoded again
    assert run_decode(latents("temporal"), out, TILINGS["temporal"], vaes["tsc"]) == 0
    assert_same_artifact(out, want)


def _enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("where,tiling,vae", [
    ("frames", "temporal", "tsc"), ("frames-half-written", "temporal", "tsc"), ("frames-half-written", "both", "plain"),
    ("checkpoint", "temporal", "tsc"), ("finalize", "temporal", "tsc")])
def test_disk_full_then_resume_equals_the_uninterrupted_decode(where, tiling, vae, latents, vaes, reference,
                                                               tmp_path, monkeypatch):
    """ENOSPC once: at each frame write (before any of it is written, or after its first frame), at each
    checkpoint's commit, or at the finalize's. The stage fails saying so (exit 74, not "a bug"); a rerun (space freed) resumes to the
    uninterrupted artifact."""
    want, checkpoints = reference(tiling, vae)
    real_write, real_attrs = writer_module.write_region, ArtifactWriter._write_attrs
    for fail_at in range(1, 2 if where == "finalize" else checkpoints + 1):
        out = tmp_path / f"{where}{fail_at}" / "frames.zarr"
        count = [0]

        def full_write(arr, rec, start, stored):
            count[0] += 1
            if count[0] == fail_at:
                if where == "frames-half-written" and stored.shape[0] > 1:
                    real_write(arr, rec, start, stored[:1])
                raise _enospc()
            return real_write(arr, rec, start, stored)

        def full_attrs(self, body, sync=True):
            if body.get("progress") and where == "checkpoint" or body.get("complete") and where == "finalize":
                count[0] += 1
                if count[0] == fail_at:
                    raise _enospc()
            return real_attrs(self, body, sync)

        if where.startswith("frames"):
            monkeypatch.setattr(writer_module, "write_region", full_write)  # (the decode writes frames only)
        else:
            monkeypatch.setattr(ArtifactWriter, "_write_attrs", full_attrs)
        assert run_decode(latents(tiling), out, TILINGS[tiling], vaes[vae]) == EXIT_NO_SPACE  # a clear error, no bug
        monkeypatch.setattr(writer_module, "write_region", real_write)
        monkeypatch.setattr(ArtifactWriter, "_write_attrs", real_attrs)
        assert count[0] == fail_at and not out.exists()
        assert run_decode(latents(tiling), out, TILINGS[tiling], vaes[vae]) == 0
        assert_same_artifact(out, want)


@pytest.mark.slow
def test_kill_9_during_decode_resumes_to_the_uninterrupted_artifact(latents, vaes, tmp_path):
    """A real `ltx2 stage decode` killed with SIGKILL once its first frames are durable (6 of its 8 tile groups
    to go), then run again, equals one run uninterrupted (both as processes: a process may preload another BLAS
    than this test's)."""
    def cmd(out: Path) -> list[str]:
        return [sys.executable, "-m", "ltx2.cli.main", "stage", "decode", "--in", str(latents("both-long")),
                "--out", str(out), "--params-json", json.dumps({"tiling": TILINGS["both-long"]}),
                "--weights", f"checkpoint={vaes['tsc']['checkpoint']}"]

    want = tmp_path / "ref" / "frames.zarr"
    r = subprocess.run(cmd(want), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "killed" / "frames.zarr"
    proc = subprocess.Popen(cmd(out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    partial, deadline = Path(str(out) + ".partial"), time.monotonic() + 300
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                progress = json.loads((partial / "zarr.json").read_text())["attributes"].get("progress") or {}
            except (OSError, ValueError, KeyError):  # not made yet, or being replaced
                progress = {}
            if progress.get("arrays", {}).get("video", {}).get("written", 0) > 0:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.005)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    assert not out.exists() and partial.exists()
    r = subprocess.run(cmd(out), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert_same_artifact(out, want)
