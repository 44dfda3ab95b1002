"""The audio-encode stage: an audio file (or a video with sound) -> a conditioning artifact, run as a process on the
tiny model with wav files the tests write, against the same samples encoded in this process; the v1.2.0 retake
and audio-to-video encodings (both draws), from the fixtures' log-mels and from their waveforms written as files."""

from __future__ import annotations

import hashlib

from fractions import Fraction
from pathlib import Path

import av
import mlx.core as mx
import numpy as np

from support import V12_DRAWS as DRAWS, load_npz as load, ltx2, rel, v12_set as fixture_set

from ltx2.artifacts_schema import open_artifact
from ltx2.models.audio_vae import AudioProcessor, load_audio_encoder
from ltx2.models.ops import conform_length
from ltx2.models.tiny import ensure_tiny_model
from ltx2.spec.geometry import audio_latent_frames
from ltx2.stages import audio_encode
from ltx2.stages.contract import Progress
from ltx2.stages.media import decode_audio
from ltx2.stages.registry import StageContext, stage_def

ENCODER_TOL = 1e-5  # README-v12 "Tolerances": encoder outputs (audio_mel, audio_latent_*), relative
COND_CHECKPOINT = "cond_ltx23_model.safetensors"


def write_wav(path: Path, wave: np.ndarray, rate: int) -> Path:
    """float32 PCM: decoding gives back exactly ``wave`` (channels, samples)."""
    with av.open(str(path), "w", format="wav") as c:
        s = c.add_stream("pcm_f32le", rate=rate, layout="stereo" if wave.shape[0] == 2 else "mono")
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave.T.reshape(1, -1), np.float32), format="flt",
                                           layout=s.layout.name)
        frame.sample_rate = rate
        for packet in s.encode(frame):
            c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    return path


def tone(seconds: float, rate: int, channels: int = 2, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    waves = [0.4 * np.sin(2 * np.pi * (220 + 110 * c) * t) + 0.05 * rng.standard_normal(t.size)
             for c in range(channels)]
    return np.stack(waves).astype(np.float32)


def encode_wave(checkpoint: Path, wave: np.ndarray, rate: int, frames: int, fps: float) -> np.ndarray:
    enc = load_audio_encoder(checkpoint)
    mel = AudioProcessor.from_config(enc.cfg)(wave[None], rate)
    return np.array(conform_length(enc(mel), audio_latent_frames(frames, fps)))


def run_stage(out: Path, audio: Path, *sets: str, weights: Path | None = None, check: bool = True):
    args = ["stage", "audio-encode", "--in", f"audio={audio}", "--out", str(out)]
    if weights is not None:
        args += ["--weights", f"checkpoint={weights}"]
    for s in sets:
        args += ["--set", s]
    return ltx2(*args, check=check)


def test_the_stage_process_encodes_the_window_of_a_wav(tmp_path) -> None:
    wave = tone(2.0, 16000)
    path = write_wav(tmp_path / "voice.wav", wave, 16000)
    out = tmp_path / "a.zarr"
    r = run_stage(out, path, "frames=25", "fps=24", "start=0.5")
    assert "audio-encode: wrote" in r.stdout
    art = open_artifact(out)
    assert art.kind == "conditioning"
    # 25 frames at 24 fps: 25/24 s from 0.5 s, 26 latent frames
    want = encode_wave(ensure_tiny_model()["checkpoint"], wave[:, 8000:8000 + 16667], 16000, 25, 24)
    got = np.array(art.read("audio"))
    assert got.shape == want.shape == (1, 2, 26, 16)
    assert rel(got, want) <= ENCODER_TOL  # a stage process preloads the optimised BLAS: float32 rounding differs
    assert art.facts == {"medium": "audio", "source_sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "width": 0, "height": 0,
                         "frame_count": 25, "fps": 24.0}


def test_mono_at_another_rate_and_a_short_file(tmp_path) -> None:
    """A mono 44.1 kHz file: the channel on both sides, resampled to 16 kHz; 0.5 s for a 1 s clip: the latent
    zero-padded to the clip's 25 frames."""
    wave = tone(0.5, 44100, channels=1, seed=1)
    path = write_wav(tmp_path / "mono.wav", wave, 44100)
    out = tmp_path / "a.zarr"
    run_stage(out, path, "frames=25", "fps=25")
    got = np.array(open_artifact(out).read("audio"))
    stereo = np.concatenate([wave, wave])
    want = encode_wave(ensure_tiny_model()["checkpoint"], stereo, 44100, 25, 25)
    assert got.shape == want.shape == (1, 2, 25, 16)
    assert rel(got, want) <= ENCODER_TOL
    assert got[:, :, :13].any() and not got[:, :, 14:].any()  # 0.5 s: 13 latent frames, then zeros


def test_the_audio_of_a_video_file(tmp_path) -> None:
    """A video file with sound: its audio stream (AAC here, so compared with the decoded samples)."""
    path = tmp_path / "clip.mp4"
    wave = tone(1.0, 16000)
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264rgb", rate=Fraction(24))
        v.width, v.height, v.pix_fmt = 64, 64, "rgb24"
        a = c.add_stream("aac", rate=16000, layout="stereo")
        for i in range(24):
            for packet in v.encode(av.VideoFrame.from_ndarray(np.full((64, 64, 3), i * 10, np.uint8), format="rgb24")):
                c.mux(packet)
        frame = av.AudioFrame.from_ndarray(wave, format="fltp", layout="stereo")
        frame.sample_rate = 16000
        for packet in a.encode(frame):
            c.mux(packet)
        for stream in (v, a):
            for packet in stream.encode():
                c.mux(packet)
    out = tmp_path / "a.zarr"
    run_stage(out, path, "frames=17", "fps=24")
    samples, rate = decode_audio(path, max_duration=17 / 24)
    want = encode_wave(ensure_tiny_model()["checkpoint"], samples, rate, 17, 24)
    assert rel(open_artifact(out).read("audio"), want) <= ENCODER_TOL


def test_a_file_without_sound_is_refused(tmp_path) -> None:
    path = tmp_path / "silent.mp4"
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264rgb", rate=Fraction(24))
        v.width, v.height, v.pix_fmt = 64, 64, "rgb24"
        for packet in v.encode(av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")):
            c.mux(packet)
        for packet in v.encode():
            c.mux(packet)
    r = run_stage(tmp_path / "a.zarr", path, "frames=17", "fps=24", check=False)
    assert r.returncode == 2 and "no audio stream" in r.stderr, r.stderr


def test_predicted_output_and_estimate() -> None:
    st = stage_def("audio-encode")
    ctx = StageContext(st, {"audio": Path("/nonexistent.wav")}, Path("/tmp/unused.zarr"),
                       st.parse_params({"frames": 121, "fps": 24}), {"checkpoint": ensure_tiny_model()["checkpoint"]},
                       "", None, Progress("audio-encode", None))
    pred = audio_encode.predict(ctx)
    assert pred.shapes == {"audio": (1, 2, audio_latent_frames(121, 24), 16)}
    assert pred.facts["frame_count"] == 121
    small = audio_encode.estimate(ctx).activations_bytes
    longer = StageContext(st, ctx.inputs, ctx.out, st.parse_params({"frames": 121, "fps": 24, "max_duration": 10}),
                          ctx.weights, "", None, ctx.progress)
    assert audio_encode.estimate(longer).activations_bytes > 1.9 * small


# -- v1.2.0 parity ------------------------------------------------------------------------------------------------
@DRAWS
def test_the_retake_and_a2v_audio_latents_equal_v12(draw: int) -> None:
    """From the fixtures' log-mels: cond_retake_ltx23 ``source_audio_mel`` -> ``source_audio_latent`` (conformed to
    26 frames); cond_a2v_ltx23 ``audio_mel`` -> ``audio_latent_encoded``, and truncated to 18 frames
    ``audio_latent_conditioning``."""
    folder = fixture_set(draw)
    enc = load_audio_encoder(folder / COND_CHECKPOINT)
    z = load(folder, "cond_retake_ltx23")
    got = np.array(conform_length(enc(mx.array(z["source_audio_mel"])), audio_latent_frames(25, 24)))
    assert got.shape == z["source_audio_latent"].shape
    assert rel(got, z["source_audio_latent"]) <= ENCODER_TOL
    z = load(folder, "cond_a2v_ltx23")
    full = enc(mx.array(z["audio_mel"]))
    assert rel(full, z["audio_latent_encoded"]) <= ENCODER_TOL
    assert rel(conform_length(full, audio_latent_frames(17, 24)), z["audio_latent_conditioning"]) <= ENCODER_TOL


@DRAWS
def test_the_stage_on_the_fixture_waveforms_equals_v12(draw: int, tmp_path) -> None:
    """The fixtures' 16 kHz waveforms as float wavs through the stage process: retake (the clip's 25/24 s, the
    official default window) -> ``source_audio_latent``; audio-to-video (the whole 0.8 s file, as the fixture read
    it, conformed to the 17-frame clip) -> ``audio_latent_conditioning``."""
    folder = fixture_set(draw)
    z = load(folder, "cond_retake_ltx23")
    path = write_wav(tmp_path / "retake.wav", z["source_audio_waveform"][0], 16000)
    out = tmp_path / "retake.zarr"
    run_stage(out, path, "frames=25", "fps=24", weights=folder / COND_CHECKPOINT)
    assert rel(open_artifact(out).read("audio"), z["source_audio_latent"]) <= ENCODER_TOL
    z = load(folder, "cond_a2v_ltx23")
    path = write_wav(tmp_path / "a2v.wav", z["audio_waveform"][0], 16000)
    out = tmp_path / "a2v.zarr"
    run_stage(out, path, "frames=17", "fps=24", "max_duration=0.8", weights=folder / COND_CHECKPOINT)
    assert rel(open_artifact(out).read("audio"), z["audio_latent_conditioning"]) <= ENCODER_TOL
