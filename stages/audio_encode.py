"""audio-encode: an audio file (or a video with sound) -> conditioning.zarr (the soundtrack's audio latent), as the
official audio-to-video and retake pipelines encode it.

The samples from ``start`` for ``max_duration`` seconds (default: the clip's length, frames / fps) are read at the
file's rate (``media.decode_audio``), made stereo (a mono file's channel is used for both; of more channels, the
first two), turned into the audio VAE's log-mel (models/audio_vae/processor.py: resampled to its rate, 16 kHz, with
libsoxr), encoded by the audio VAE encoder, and conformed to the clip's audio latent frames
(``spec.geometry.audio_latent_frames(frames, fps)``): truncated, or zero-padded when the audio is shorter, as the
official ``_conform_latent_length`` does (the audio-to-video pipeline truncates only; refusing audio shorter than
the clip is the job check's part).

The cache key holds the file's sha256, these parameters and the weights.
"""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import numpy as np
from pydantic import Field

from ltx2.artifacts_schema.keys import file_key
from ltx2.models.audio_vae import (AUDIO_ENCODER_KEYMAP, LATENT_DOWNSAMPLE_FACTOR, AudioConfigError, AudioProcessor,
                                   AudioVAEConfig, load_audio_encoder)
from ltx2.models.ops import conform_length
from ltx2.models.weights.source import open_source
from ltx2.spec.geometry import audio_latent_frames
from ltx2.spec.layout import CHECKPOINT_PARTS
from ltx2.spec.precision import Compute

from .contract import BadInput, MemoryPlan
from .media import decode_audio, probe
from .memory import COMPUTE_BYTES, cached_header, compute_bytes, compute_of, weight_bytes
from .params import compute_field
from .registry import FILE, Port, PredictedOutput, StageContext, StageDef, StageParams

ENCODER_PREFIXES = CHECKPOINT_PARTS["audio_encoder"]
CHANNELS = 2  # the audio VAE reads stereo log-mel

# Peak of the audio encoder (MLX 0.32, CPU; the whole graph runs at once): ~61 activations of (mel frames x mel
# bins x ch), the first level's grid, at the tiny (ch 32) and the real (ch 128) widths alike, 1 to 20 s (measured in
# float32; counted at the compute width); the log-mel front end ~28 float32 per input sample (frames gathered n_fft
# wide, their spectra: float32 whatever the compute, as the official front end). Rounded up.
ENCODER_ACTIVATIONS = 64
PROCESSOR_PER_SAMPLE = 32


class Params(StageParams):
    frames: int = Field(ge=1, description="pixel frames of the clip the audio conditions")
    fps: float = Field(gt=0, description="frame rate of that clip")
    start: float = Field(0.0, ge=0, description="seconds into the file to read from")
    max_duration: float | None = Field(None, gt=0, description="seconds to read (default: frames / fps)")
    compute: Compute = compute_field()


def audio_config(ctx: StageContext) -> AudioVAEConfig:
    ckpt = ctx.weights["checkpoint"]
    try:
        cfg = AudioVAEConfig.from_config(cached_header(ckpt).config())
    except (AudioConfigError, KeyError, ValueError) as e:
        raise BadInput(f"audio-encode: the audio VAE config of {ckpt} is not supported: {e}; use an LTX-2 checkpoint "
                       "(`ltx2 weights check FILE` says what it is)") from e
    if cfg.mel_bins is None:
        raise BadInput(f"audio-encode: {ckpt}'s audio VAE config names no mel bin count; use an LTX-2 checkpoint")
    return cfg


def duration(p: Params) -> float:
    return p.max_duration if p.max_duration is not None else p.frames / p.fps


def latent_frames(p: Params) -> int:
    return audio_latent_frames(p.frames, p.fps)


def check(ctx: StageContext) -> None:
    """The config, the checkpoint holds the encoder and, when the file is there, its audio stream (headers only)."""
    audio_config(ctx)
    open_source(ctx.weights["checkpoint"], AUDIO_ENCODER_KEYMAP).require_tensors()
    f = ctx.inputs.get("audio")
    if isinstance(f, Path) and f.is_file():
        info = probe(f)
        if not info.has_audio:
            raise BadInput(f"audio-encode: {f} holds no audio stream; give an audio file (WAV, MP3, ...) or a video "
                           "with sound")
        if info.duration_s and ctx.params.start >= info.duration_s:
            raise BadInput(f"audio-encode: start {ctx.params.start:g} s is past the end of {f} "
                           f"({info.duration_s:.3g} s); give a start inside the audio")


def estimate(ctx: StageContext) -> MemoryPlan:
    """The encoder's weights; the larger of the log-mel front end and the encoder on the window read (the encoder at
    the compute width)."""
    cfg, p = audio_config(ctx), ctx.params
    ckpt = ctx.weights["checkpoint"]
    f = ctx.inputs.get("audio")
    rate = cfg.sample_rate
    if isinstance(f, Path) and f.is_file():
        rate = max(rate, probe(f).sample_rate)  # the file's own rate before resampling, when higher
    samples = CHANNELS * (int(duration(p) * rate) + 1)
    mel_frames = 1 + int(duration(p) * cfg.sample_rate) // cfg.mel_hop_length
    b = compute_bytes(ctx)
    encoder = ENCODER_ACTIVATIONS * mel_frames * cfg.mel_bins * cfg.ch * b
    return MemoryPlan(weight_bytes(ckpt, ENCODER_PREFIXES, bytes_per_element=b),
                      max(PROCESSOR_PER_SAMPLE * samples * COMPUTE_BYTES, encoder))


def predict(ctx: StageContext) -> PredictedOutput:
    cfg, p = audio_config(ctx), ctx.params
    bins = cfg.mel_bins // LATENT_DOWNSAMPLE_FACTOR
    return PredictedOutput({"audio": (1, cfg.z_channels, latent_frames(p), bins)},
                           {"medium": "audio", "width": 0, "height": 0, "frame_count": p.frames, "fps": p.fps})


def stereo(wave: np.ndarray) -> np.ndarray:
    """(channels, samples) -> (2, samples): mono on both channels, more than two: the first two (front L/R)."""
    if wave.shape[0] == 1:
        return np.concatenate([wave, wave], axis=0)
    return wave[:CHANNELS]


def run(ctx: StageContext) -> None:
    p = ctx.params
    source: Path = ctx.inputs["audio"]
    wave, rate = decode_audio(source, start=p.start, max_duration=duration(p))
    encoder = load_audio_encoder(ctx.weights["checkpoint"], compute_of(ctx))
    ctx.progress.step(0, 2)
    try:
        mel = AudioProcessor.from_config(encoder.cfg)(stereo(wave)[None], rate)
    except ValueError as e:  # a window too short for one STFT frame
        raise BadInput(f"audio-encode: {source}: {e}; give a longer audio window") from None
    mx.eval(mel)
    ctx.progress.step(1, 2)
    latent = conform_length(encoder(mel).astype(mx.float32), latent_frames(p))  # artifacts hold float32
    mx.eval(latent)
    writer = ctx.writer()
    writer.write_array("audio", latent)
    writer.finalize(facts={"medium": "audio", "source_sha256": file_key(source), "width": 0, "height": 0,
                           "frame_count": p.frames, "fps": float(p.fps)})
    ctx.progress.step(2, 2)


STAGE = StageDef(
    name="audio-encode", version=1,
    summary="audio (or video) file -> audio latent for audio-to-video / retake (log-mel, audio VAE encoder)",
    inputs={"audio": Port(FILE)}, params=Params, output_kind="conditioning", output_name="audio-conditioning.zarr",
    weights={"checkpoint": "audio_encoder"}, check=check, estimate=estimate, run=run, predict=predict,
    budget_fix="raise memory_budget, or encode a shorter audio window (max_duration)",
)
