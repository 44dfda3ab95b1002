"""Parity of the conditioning inputs on the v1.2.0 ``cond_*`` fixtures: media preprocessing and the encoders.

Every pixels / mel / encoder-latent array a fixture records is recomputed from the fixture's own inputs:

- preprocessed pixels (``s{k}_image{j}_pixels``, ``ref_video_pixels``, ``source_video_pixels``) from the uint8
  media (``image{j}_crf_u8``: the image after the official H.264 round trip; the decoded clips), by
  stages/media.py's resize and centre crop, to 1e-5 absolute (one uint8 step is 7.8e-3);
- the IC-LoRA reference's attention weights from the mask video (area means x the fixture's attention strength
  0.8), to 1e-6 absolute;
- video latents (``s{k}_image{j}_latent``, ``ref_video_latent``, ``source_video_latent``) from the fixture's pixels
  by the video VAE encoder of the case's checkpoint; the retake source's official ``tiled_encode`` is one tile
  at this size, the same as an untiled encode;
- log-mels (``audio_mel``, ``source_audio_mel``) from the waveforms by the audio VAE's front-end, and audio latents
  (``audio_latent_encoded``, ``source_audio_latent``; ``audio_latent_conditioning``, the encoded latent cut to the
  clip's audio frames) from the fixture's mels by the audio VAE encoder, to 1e-5 relative.

The CRF round trip itself (``image{j}_raw_u8`` -> ``image{j}_crf_u8``) is not a row here: libx264's output may
differ between builds (README-v12.md), so tests/stages/test_media.py checks it where it can.
"""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import numpy as np

from ltx2.models.audio_vae import AudioProcessor, load_audio_encoder
from ltx2.models.video_vae import load_video_encoder
from ltx2.spec.geometry import audio_latent_frames
from ltx2.stages.image_encode import encode_pixels
from ltx2.stages.media import mask_to_latent_weights, resize_center_crop

from . import ParityResult, compare, load_fixture

PIXELS_TOL = 1e-5  # absolute
MASK_TOL = 1e-6  # absolute
ENCODER_TOL = 1e-5  # relative
CLIP_FRAMES = {"cond_a2v_ltx23": 17, "cond_retake_ltx23": 25}  # the clip each case's audio conditions (manifest)
CLIP_FPS = 24.0
IC_LORA_ATTENTION_STRENGTH = 0.8  # the case's conditioning_attention_strength (manifest)


def checkpoint_of(name: str) -> str:
    return "cond_ltx2_model.safetensors" if name.endswith("_ltx2") else "cond_ltx23_model.safetensors"


def compare_abs(fixture: str, output: str, out, ref, tol: float) -> ParityResult:
    """Max |out - ref| against an absolute tolerance (the value is reported in the rel_err column)."""
    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    if out.shape != ref.shape:
        return ParityResult(fixture, output, None, tol, "FAIL", f"shape {out.shape} differs from reference {ref.shape}")
    err = float(np.abs(out - ref).max()) if ref.size else 0.0
    return ParityResult(fixture, output, err, tol, "pass" if err <= tol else "FAIL", "max abs diff")


def conform_frames(latent: np.ndarray, frames: int) -> np.ndarray:
    """Cut or zero-pad axis 2 to ``frames``, as the official file helpers fit a latent to the clip."""
    if latent.shape[2] >= frames:
        return latent[:, :, :frames]
    pad = list(latent.shape)
    pad[2] = frames - latent.shape[2]
    return np.concatenate([latent, np.zeros(pad, latent.dtype)], axis=2)


def _video(z: dict, name: str, encoder, pixels_key: str, latent_key: str, media_key: str) -> list[ParityResult]:
    ref = z[pixels_key]
    rows = [compare_abs(name, pixels_key, resize_center_crop(z[media_key], ref.shape[3], ref.shape[4]), ref,
                        PIXELS_TOL)]
    latent = encode_pixels(encoder, ref)
    mx.eval(latent)
    return rows + [compare(name, latent_key, np.array(latent), z[latent_key], ENCODER_TOL)]


def _audio(z: dict, name: str, encoder, wave_key: str, mel_key: str, latent_keys: tuple[str, ...],
           clip_frames: int) -> list[ParityResult]:
    """The log-mel of the waveform, and the encoder's latent of the fixture's mel: as encoded (a ``*_encoded`` key)
    or fitted to the clip's audio frames (the others)."""
    mel = AudioProcessor.from_config(encoder.cfg)(z[wave_key])
    latent = encoder(mx.array(z[mel_key]))
    mx.eval(mel, latent)
    rows = [compare(name, mel_key, np.array(mel), z[mel_key], ENCODER_TOL)]
    for key in latent_keys:
        out = np.array(latent) if key.endswith("_encoded") else conform_frames(np.array(latent), clip_frames)
        rows.append(compare(name, key, out, z[key], ENCODER_TOL))
    return rows


def check_cond_encoders(directory: Path, name: str) -> list[ParityResult]:
    directory = Path(directory)
    z = load_fixture(directory, name)
    ckpt = directory / checkpoint_of(name)
    rows: list[ParityResult] = []
    images = sorted(k for k in z if k.endswith("_pixels") and "_image" in k)
    if images or "ref_video_pixels" in z or "source_video_pixels" in z:
        encoder = load_video_encoder(ckpt)
        for key in images:  # s{k}_image{j}_pixels
            j = key.split("_image")[1].split("_")[0]
            rows += _video(z, name, encoder, key, key.replace("_pixels", "_latent"), f"image{j}_crf_u8")
        if "ref_video_pixels" in z:
            rows += _video(z, name, encoder, "ref_video_pixels", "ref_video_latent", "ref_video_decoded_u8")
            _, _, f, h, w = z["ref_video_latent"].shape
            weights = mask_to_latent_weights(z["conditioning_attention_mask_pixels"], (f, h, w))
            rows.append(compare_abs(name, "ref_latent_attention_weights",
                                    weights * np.float32(IC_LORA_ATTENTION_STRENGTH),
                                    z["ref_latent_attention_weights"], MASK_TOL))
        if "source_video_pixels" in z:
            rows += _video(z, name, encoder, "source_video_pixels", "source_video_latent", "source_video_decoded_u8")
    if "audio_waveform" in z or "source_audio_waveform" in z:
        encoder = load_audio_encoder(ckpt)
        clip = audio_latent_frames(CLIP_FRAMES[name], CLIP_FPS)
        if "audio_waveform" in z:
            rows += _audio(z, name, encoder, "audio_waveform", "audio_mel",
                           ("audio_latent_encoded", "audio_latent_conditioning"), clip)
        if "source_audio_waveform" in z:
            rows += _audio(z, name, encoder, "source_audio_waveform", "source_audio_mel", ("source_audio_latent",),
                           clip)
    if not rows:
        rows.append(ParityResult(name, "-", None, None, "FAIL", "no conditioning arrays found in the fixture"))
    return rows
