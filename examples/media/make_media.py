"""Make the tiny media the conditioning examples use (examples/*.yaml), deterministically.

    python examples/media/make_media.py [OUT_FOLDER]     # default: this file's folder

- ``first.png`` (160x100) and ``last.png`` (120x150, another aspect: the crop runs on the other axis): stills for
  image-to-video and keyframe interpolation;
- ``voice.wav``: 1 s of stereo 16 kHz 16-bit sound (a buzzy "voice" in syllables), for audio-to-video;
- ``source.mp4``: 96x64, 25 frames at 24 fps, H.264 + AAC stereo: the clip the retake example regenerates in part;
- ``reference.mp4``: 112x80, 17 frames at 24 fps, video only: the IC-LoRA example's reference (a moving outline);
- ``mask.mp4``: 112x80, 17 frames, grayscale: the IC-LoRA's conditioning attention mask (left third black);
- ``ic-lora.safetensors``: a rank-4 IC-LoRA that fits the ``tiny-2.3`` (and ``tiny``) transformer (2 blocks, width 64,
  feed-forward 256), self-attention and feed-forward adapted, metadata ``reference_downscale_factor`` "2".

Everything comes from fixed formulas and one seeded generator, so the same bytes come out on every run (the mp4s
are the same wherever the same FFmpeg encoders are). The tiny model renders noise: the content only has to be
something, not art.
"""

from __future__ import annotations

import sys
import wave
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image
from safetensors.numpy import save_file

FPS = 24
AUDIO_RATE = 16000
SEED = 20261207

# tiny-2.3's transformer (models/tiny/configs.py): 2 blocks, 2 heads x 32 = 64 wide, feed-forward 4 x 64
LORA_BLOCKS, LORA_WIDTH, LORA_FF, LORA_RANK = 2, 64, 256, 4
LORA_TARGETS = {"attn1.to_q": (LORA_WIDTH, LORA_WIDTH), "attn1.to_k": (LORA_WIDTH, LORA_WIDTH),
                "attn1.to_v": (LORA_WIDTH, LORA_WIDTH), "attn1.to_out.0": (LORA_WIDTH, LORA_WIDTH),
                "ff.net.0.proj": (LORA_FF, LORA_WIDTH), "ff.net.2": (LORA_WIDTH, LORA_FF)}  # (out, in)


def scene(width: int, height: int, t: float) -> np.ndarray:
    """An RGB uint8 picture at time ``t`` in [0, 1]: a sky-to-ground gradient with a sun crossing it."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    v = y / max(height - 1, 1)
    img = np.stack([60 + 150 * v, 110 + 60 * v, 220 - 170 * v], axis=-1)
    cx, cy, r = (0.2 + 0.6 * t) * width, (0.35 - 0.1 * t) * height, 0.18 * min(width, height)
    sun = ((x - cx) ** 2 + (y - cy) ** 2) < r * r
    img[sun] = (250, 210, 60)
    img[y > 0.75 * height] *= 0.6  # the ground
    return img.clip(0, 255).astype(np.uint8)


def outline(width: int, height: int, t: float) -> np.ndarray:
    """An edge-map-like RGB frame: a white ring moving left to right on black (what an IC-LoRA's control looks
    like: poses, edges, depth)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    cx, cy, r = (0.25 + 0.5 * t) * width, 0.5 * height, 0.25 * height
    d = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
    ring = (np.abs(d - r) < 1.5).astype(np.uint8) * 255
    return np.repeat(ring[..., None], 3, axis=-1)


def mask_frame(width: int, height: int) -> np.ndarray:
    """Left third 0 (the reference ignored there), the rest 1 (full influence)."""
    m = np.full((height, width, 3), 255, np.uint8)
    m[:, : width // 3] = 0
    return m


def voice(seconds: float, rate: int = AUDIO_RATE) -> np.ndarray:
    """(samples, 2) int16: a 140 Hz buzz with harmonics, in 4 syllables per second, the right channel a little
    quieter and later (a stereo image)."""
    t = np.arange(int(round(seconds * rate)), dtype=np.float64) / rate
    buzz = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 8))
    syllables = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 2
    left = 0.3 * buzz * syllables
    right = 0.8 * np.roll(left, rate // 100)
    return (np.stack([left, right], axis=1) * 32767 / 2).round().astype(np.int16)


def write_png(path: Path, pixels: np.ndarray) -> None:
    Image.fromarray(pixels, "RGB").save(path, format="PNG", optimize=False, compress_level=9)


def write_wav(path: Path, samples: np.ndarray, rate: int = AUDIO_RATE) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(samples.shape[1])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())


def write_mp4(path: Path, frames: list[np.ndarray], fps: int = FPS, sound: np.ndarray | None = None,
              rate: int = AUDIO_RATE) -> None:
    """H.264 (yuv420p, crf 12, one thread: the same bytes each run) and, given ``sound`` ((samples, 2) int16),
    AAC stereo."""
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w", format="mp4") as out:
        out.metadata.clear()
        v = out.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = width, height, "yuv420p"
        v.options = {"crf": "12", "preset": "medium", "threads": "1"}
        v.codec_context.thread_count = 1
        a = None
        if sound is not None:
            a = out.add_stream("aac", rate=rate, layout="stereo")
        for i, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            out.mux(v.encode(frame))
        out.mux(v.encode(None))
        if a is not None:
            planar = np.ascontiguousarray(sound.T.astype(np.float32) / 32768)  # fltp: one plane per channel
            chunk = 1024
            for start in range(0, planar.shape[1], chunk):
                frame = av.AudioFrame.from_ndarray(planar[:, start:start + chunk], format="fltp", layout="stereo")
                frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
                out.mux(a.encode(frame))
            out.mux(a.encode(None))


def ic_lora() -> dict[str, np.ndarray]:
    """Rank-4 lora_A / lora_B pairs for every self-attention and feed-forward projection of both blocks, small
    enough that the fused weights stay close to the model's."""
    rng = np.random.default_rng(SEED)
    tensors = {}
    for block in range(LORA_BLOCKS):
        for target, (out_dim, in_dim) in LORA_TARGETS.items():
            key = f"diffusion_model.transformer_blocks.{block}.{target}"
            tensors[f"{key}.lora_A.weight"] = (rng.standard_normal((LORA_RANK, in_dim)) / in_dim).astype(np.float32)
            tensors[f"{key}.lora_B.weight"] = (rng.standard_normal((out_dim, LORA_RANK)) * 0.05).astype(np.float32)
    return tensors


def make(out: Path) -> list[Path]:
    """Write every medium into ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    made = []

    def path(name: str) -> Path:
        made.append(out / name)
        return out / name

    write_png(path("first.png"), scene(160, 100, 0.0))
    write_png(path("last.png"), scene(120, 150, 1.0))
    write_wav(path("voice.wav"), voice(1.0))
    source_frames = 25
    write_mp4(path("source.mp4"), [scene(96, 64, i / (source_frames - 1)) for i in range(source_frames)],
              sound=voice(source_frames / FPS))
    write_mp4(path("reference.mp4"), [outline(112, 80, i / 16) for i in range(17)])
    write_mp4(path("mask.mp4"), [mask_frame(112, 80)] * 17)
    save_file(ic_lora(), str(path("ic-lora.safetensors")), metadata={"reference_downscale_factor": "2"})
    return made


if __name__ == "__main__":
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent
    for p in make(folder):
        print(f"{p}  {p.stat().st_size:,} bytes")
