"""Latent geometry: latent shapes from the requested video (frames, height, width, fps), decode tiling.

Video: the VAE compresses 8x in time (the first frame alone: causal) and 32x in space.
Audio: 16 kHz mel with hop 160 and a further 4x in the audio VAE gives 25 latent frames per
second; the audio latent spans the video's duration, rounded to the nearest latent frame.
"""

from __future__ import annotations

from dataclasses import dataclass

VIDEO_TIME_SCALE = 8
VIDEO_SPACE_SCALE = 32
VIDEO_LATENT_CHANNELS = 128

AUDIO_SAMPLE_RATE = 16000
AUDIO_HOP_LENGTH = 160
AUDIO_LATENT_DOWNSAMPLE = 4
AUDIO_LATENT_CHANNELS = 8
AUDIO_LATENT_MEL_BINS = 16


@dataclass(frozen=True)
class VideoLatentShape:
    batch: int
    channels: int
    frames: int
    height: int
    width: int

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        """(B, C, F, H, W): the official layout of a video latent."""
        return (self.batch, self.channels, self.frames, self.height, self.width)

    @property
    def tokens(self) -> int:
        """Token count after patchifying with patch size 1."""
        return self.frames * self.height * self.width


@dataclass(frozen=True)
class AudioLatentShape:
    batch: int
    channels: int
    frames: int
    mel_bins: int

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(B, C, T, mel bins): the official layout of an audio latent."""
        return (self.batch, self.channels, self.frames, self.mel_bins)

    @property
    def tokens(self) -> int:
        return self.frames


def video_latent_shape(frames: int, height: int, width: int, batch: int = 1,
                       channels: int = VIDEO_LATENT_CHANNELS) -> VideoLatentShape:
    """Latent grid for a video of ``frames`` x ``height`` x ``width`` pixels (floor, as the reference).

    The VAE itself needs frames = 8k+1 and sides divisible by 32; callers validate that.
    """
    return VideoLatentShape(batch, channels, (frames - 1) // VIDEO_TIME_SCALE + 1,
                            height // VIDEO_SPACE_SCALE, width // VIDEO_SPACE_SCALE)


def audio_latents_per_second(sample_rate: int = AUDIO_SAMPLE_RATE, hop_length: int = AUDIO_HOP_LENGTH,
                             downsample: int = AUDIO_LATENT_DOWNSAMPLE) -> float:
    return float(sample_rate) / float(hop_length) / float(downsample)


def audio_latent_frames(frames: int, fps: float) -> int:
    """round(frames / fps * 25): the audio latent covering a video of ``frames`` frames at ``fps``.

    Python's round (half to even) applied to the same float expression as the reference, so edge
    cases land on the same side.
    """
    if fps <= 0:
        raise ValueError(f"fps={fps}: must be positive")
    return round((float(frames) / float(fps)) * audio_latents_per_second())


def audio_latent_shape(frames: int, fps: float, batch: int = 1, channels: int = AUDIO_LATENT_CHANNELS,
                       mel_bins: int = AUDIO_LATENT_MEL_BINS) -> AudioLatentShape:
    return AudioLatentShape(batch, channels, audio_latent_frames(frames, fps), mel_bins)


# The official decode tiling: 512 px tiles overlapping by 64, 64-frame tiles overlapping by 24.
OFFICIAL_DECODE_TILING = {"spatial_tile": 512, "spatial_overlap": 64, "temporal_tile": 64, "temporal_overlap": 24}



# -- what the model supports: a job beyond these is refused when it is read (not after minutes of planning)
# The transformer places tokens by pixel and by second, scaled by its positional_embedding_max_pos
# (2048 px, 20 s). LTX-2 renders up to 4K (the two-stage pipelines refine at twice stage 1's size), so a
# side may reach twice the positional scale, no more.
MAX_SIDE_PIXELS = 4096
MAX_SIDE_REASON = "the most LTX-2 renders (4K; its positions are scaled for 2048 px)"
# Time positions end at 20 s; 20 s at 50 fps (the highest official frame rate) is 1001 frames.
MAX_SECONDS = 20.0
MAX_FRAMES = 1001
MAX_TIME_REASON = "LTX-2's time positions end at 20 s"
MAX_FRAMES_REASON = "20 s at 50 fps, the most LTX-2 renders"


def duration_seconds(frames: int, fps: float) -> float:
    """Seconds from the first frame to the last: what the transformer's time positions span."""
    return (frames - 1) / fps


def min_frames_for_audio(fps: float) -> int | None:
    """The fewest frames (8k+1, up to MAX_FRAMES) whose audio latent has at least one frame at ``fps``;
    None when even MAX_FRAMES is too short."""
    for frames in range(1, MAX_FRAMES + 1, VIDEO_TIME_SCALE):
        if audio_latent_frames(frames, fps) >= 1:
            return frames
    return None


# Two-stage pipelines: stage 1 renders at target / scale and the spatial latent upsampler brings it to the target.
# scale -> (up, down) as whole factors: x2 (the official x2 upsamplers) and x1.5 (LTX-2.3's rational resampler).
TWO_STAGE_SPATIAL_SCALES: dict[float, tuple[int, int]] = {2.0: (2, 1), 1.5: (3, 2)}


def two_stage_factors(scale: float) -> tuple[int, int]:
    """(up, down) of a two-stage spatial scale; ValueError for a scale the pipelines do not run."""
    try:
        return TWO_STAGE_SPATIAL_SCALES[float(scale)]
    except KeyError:
        raise ValueError(f"spatial scale x{scale:g}: the two-stage pipelines upscale x"
                         f"{' or x'.join(f'{s:g}' for s in TWO_STAGE_SPATIAL_SCALES)}") from None


def two_stage_side_step(scale: float) -> int:
    """Target sides must be multiples of this: 32 * up, so that stage 1 (target * down / up) is a whole number of
    latent pixels that is itself a multiple of ``down`` (the upsampler then lands exactly on the target: the
    rational x1.5 resampler maps a latent side L to ceil(3L/2)). x2: 64 (stage 1 a multiple of 32); x1.5: 96
    (stage 1 a multiple of 64)."""
    up, _ = two_stage_factors(scale)
    return VIDEO_SPACE_SCALE * up


def stage1_side(target: int, scale: float) -> int:
    """The stage-1 side of a two-stage render of ``target`` pixels (x2: half; x1.5: two thirds)."""
    up, down = two_stage_factors(scale)
    return target * down // up
