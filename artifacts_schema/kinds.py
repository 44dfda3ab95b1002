"""The artifact kinds: which arrays and facts each one must hold, and how its arrays are chunked.

Every artifact is one Zarr v3 group. Its group attributes carry the schema name and version, the
kind, the producer, the cache keys, the parameters, a ``facts`` dict (the shape facts a reader
needs) and an ``arrays`` dict (per array: shape, logical dtype, time axis, chunking and sha256).

Chunking follows how the arrays are read: one chunk per latent frame (the time axis), whole
extent along every other axis, so a reader can pull a time range without touching the rest.
Latents and embeddings barely compress and are stored raw; uint8 frames and PCM get zstd level 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

SCHEMA_NAME = "ltx2.artifact"
# Bump when the layout or a kind's required fields change; readers refuse other versions.
# 2: the group attributes carry attrs_sha256 (hashing.py), checked on open.
SCHEMA_VERSION = 2

FLOATS = ("float32", "bfloat16", "float16")
MASKS = ("bool", "uint8", "int32", "int64")


@dataclass(frozen=True)
class ArraySpec:
    name: str
    rank: int
    dtypes: tuple[str, ...]     # allowed logical dtypes
    time_axis: int | None       # axis chunked along time; None: the whole array is one chunk
    chunk_time: int = 1         # time steps per chunk along time_axis
    compress: bool = False      # zstd level 1 (worth it for frames and PCM only)
    required: bool = True
    doc: str = ""


@dataclass(frozen=True)
class FactSpec:
    name: str
    types: tuple[type, ...]
    doc: str = ""

    def accepts(self, value: object) -> bool:
        # bool is an int in Python; a fact typed int or float must not silently accept True.
        if isinstance(value, bool):
            return bool in self.types
        return isinstance(value, self.types)

    @property
    def type_names(self) -> str:
        return " or ".join(t.__name__ for t in self.types)


# shapes: name -> shape of every array present; facts: the facts dict. Returns problems, or [].
CrossCheck = Callable[[dict[str, tuple[int, ...]], dict], list[str]]


@dataclass(frozen=True)
class KindSpec:
    name: str
    arrays: tuple[ArraySpec, ...]
    facts: tuple[FactSpec, ...]
    doc: str
    cross_check: CrossCheck | None = None
    reserved: bool = False      # defined so the slot exists; a later issue fills it in
    by_name: dict[str, ArraySpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "by_name", {a.name: a for a in self.arrays})

    def array(self, name: str) -> ArraySpec | None:
        return self.by_name.get(name)

    @property
    def required_arrays(self) -> list[str]:
        return [a.name for a in self.arrays if a.required]


def _text_check(shapes, facts):
    problems = []
    neg = [n for n in ("negative_video_context", "negative_audio_context", "negative_attention_mask") if n in shapes]
    if facts.get("has_negative") is True and len(neg) != 3:
        problems.append("fact has_negative is true but the negative_* arrays are not all present "
                        f"(found {neg or 'none'})")
    if facts.get("has_negative") is False and neg:
        problems.append(f"fact has_negative is false but negative arrays are present: {neg}")
    for prefix in ("", "negative_"):
        names = [prefix + n for n in ("video_context", "audio_context", "attention_mask")]
        if not all(n in shapes for n in names):
            continue
        lengths = {n: shapes[n][1] for n in names}
        if len(set(lengths.values())) != 1 or facts.get("sequence_length") not in lengths.values():
            problems.append(f"token counts disagree: {lengths}, fact sequence_length="
                            f"{facts.get('sequence_length')}")
    return problems


def _latents_check(shapes, facts):
    problems = []
    if "video" in shapes and "audio" in shapes and shapes["video"][0] != shapes["audio"][0]:
        problems.append(f"batch sizes differ: video {shapes['video']}, audio {shapes['audio']}")
    step, total = facts.get("step"), facts.get("total_steps")
    if isinstance(step, int) and isinstance(total, int) and not 0 <= step <= total:
        problems.append(f"fact step={step} is outside 0..total_steps={total}")
    return problems


def _frames_check(shapes, facts):
    if "video" not in shapes:
        return []
    want = (facts.get("frame_count"), facts.get("height"), facts.get("width"), 3)
    if tuple(shapes["video"]) != want:
        return [f"array video has shape {tuple(shapes['video'])} but the facts say "
                f"(frame_count, height, width, 3) = {want}"]
    return []


def _audio_check(shapes, facts):
    if "waveform" not in shapes:
        return []
    want = (facts.get("channels"), facts.get("sample_count"))
    if tuple(shapes["waveform"]) != want:
        return [f"array waveform has shape {tuple(shapes['waveform'])} but the facts say "
                f"(channels, sample_count) = {want}"]
    return []


_INT, _FLOAT, _BOOL = (int,), (int, float), (bool,)

TEXT = KindSpec(
    name="text",
    doc="Prompt embeddings from the text encoder (Gemma + connectors): the video and audio "
        "context the transformer cross-attends to, and the token mask; the negative prompt's "
        "set too when the pipeline uses CFG.",
    arrays=(
        ArraySpec("video_context", 3, FLOATS, None, doc="(batch, tokens, video_dim)"),
        ArraySpec("audio_context", 3, FLOATS, None, doc="(batch, tokens, audio_dim)"),
        ArraySpec("attention_mask", 2, MASKS, None, doc="(batch, tokens), 1 = real token"),
        ArraySpec("negative_video_context", 3, FLOATS, None, required=False, doc="negative prompt"),
        ArraySpec("negative_audio_context", 3, FLOATS, None, required=False, doc="negative prompt"),
        ArraySpec("negative_attention_mask", 2, MASKS, None, required=False, doc="negative prompt"),
    ),
    facts=(
        FactSpec("sequence_length", _INT, "tokens per prompt (padded)"),
        FactSpec("has_negative", _BOOL, "the negative_* arrays are present"),
    ),
    cross_check=_text_check,
)

def _conditioning_check(shapes, facts):
    problems = []
    medium = facts.get("medium")
    want = {"image": "video", "video": "video", "audio": "audio"}.get(medium)
    if want is None:
        return [f"fact medium={medium!r} is not image, video or audio"]
    if want not in shapes:
        problems.append(f"a {medium} conditioning holds no {want} array (found {sorted(shapes) or 'none'})")
    if medium == "image" and want in shapes and shapes[want][2] != 1:
        problems.append(f"an image conditioning has {shapes[want][2]} latent frames, not 1")
    if "attention" in shapes and "video" in shapes:
        _, _, f, h, w = shapes["video"]
        if tuple(shapes["attention"]) != (shapes["video"][0], f * h * w):
            problems.append(f"array attention has shape {tuple(shapes['attention'])}, not (batch, latent tokens) = "
                            f"{(shapes['video'][0], f * h * w)}")
    return problems


CONDITIONING = KindSpec(
    name="conditioning",
    doc="One conditioning medium encoded to latents by an encode stage (image-encode, video-encode, "
        "audio-encode): an image (one latent frame), a video clip (IC-LoRA reference or retake source) or "
        "a soundtrack (audio-to-video, retake source). How it applies (frame, strength, replace / keyframe / "
        "reference / frozen / source) is the denoising stage's parameter, not part of this artifact, so one "
        "encoding serves every job that shares the file and size.",
    arrays=(
        ArraySpec("video", 5, FLOATS, time_axis=2, required=False,
                  doc="(batch, channels, latent_frames, h, w): image or video latent"),
        ArraySpec("audio", 4, FLOATS, time_axis=2, chunk_time=256, required=False,
                  doc="(batch, channels, latent_frames, mel_bins): audio latent"),
        ArraySpec("attention", 2, FLOATS, None, required=False,
                  doc="(batch, latent tokens): the conditioning attention mask's per-token weight in [0, 1] "
                      "(the mask video's area means per latent cell)"),
    ),
    facts=(
        FactSpec("medium", (str,), "image, video or audio"),
        FactSpec("source_sha256", (str,), "sha256 of the file it was encoded from"),
        FactSpec("width", _INT, "pixel width encoded (0 for audio)"),
        FactSpec("height", _INT, "pixel height encoded (0 for audio)"),
        FactSpec("frame_count", _INT, "pixel frames encoded (1 for an image; the clip the audio spans, for audio)"),
        FactSpec("fps", _FLOAT, "frame rate of the clip (0 for an image)"),
    ),
    cross_check=_conditioning_check,
)

LATENTS = KindSpec(
    name="latents",
    doc="Video and audio latents together, as a denoise/refine/upscale stage leaves them. "
        "A denoising stage checkpoints these into its partial artifact after every step.",
    arrays=(
        ArraySpec("video", 5, FLOATS, time_axis=2, doc="(batch, channels, latent_frames, h, w)"),
        # Audio latents are tiny (a few hundred bytes per latent frame): a few big chunks.
        ArraySpec("audio", 4, FLOATS, time_axis=2, chunk_time=256, doc="(batch, channels, latent_frames, mel_bins)"),
        ArraySpec("video_appended", 3, FLOATS, None, required=False,
                  doc="(batch, tokens, channels): conditioning tokens appended to the video (keyframes, IC-LoRA "
                      "references) as the last step left them, so a resumed stage continues them"),
    ),
    facts=(
        FactSpec("frame_count", _INT, "pixel frames the latents decode to"),
        FactSpec("height", _INT, "pixel height"),
        FactSpec("width", _INT, "pixel width"),
        FactSpec("fps", _FLOAT, "frames per second"),
        FactSpec("sigma", _FLOAT, "noise level reached (0.0 when fully denoised)"),
        FactSpec("step", _INT, "denoising steps completed"),
        FactSpec("total_steps", _INT, "denoising steps in this stage's schedule"),
    ),
    cross_check=_latents_check,
)

FRAMES = KindSpec(
    name="frames",
    doc="Decoded video frames, uint8 RGB.",
    arrays=(
        ArraySpec("video", 4, ("uint8",), time_axis=0, compress=True, doc="(frames, height, width, 3)"),
    ),
    facts=(
        FactSpec("frame_count", _INT), FactSpec("height", _INT), FactSpec("width", _INT),
        FactSpec("fps", _FLOAT),
    ),
    cross_check=_frames_check,
)

AUDIO = KindSpec(
    name="audio",
    doc="Vocoded audio, float32 PCM in [-1, 1].",
    arrays=(
        ArraySpec("waveform", 2, ("float32",), time_axis=1, chunk_time=1 << 16, compress=True,
                  doc="(channels, samples)"),
    ),
    facts=(
        FactSpec("sample_rate", _INT), FactSpec("channels", _INT), FactSpec("sample_count", _INT),
    ),
    cross_check=_audio_check,
)

KINDS: dict[str, KindSpec] = {k.name: k for k in (TEXT, CONDITIONING, LATENTS, FRAMES, AUDIO)}


def chunk_shape(spec: ArraySpec, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Whole extent on every axis but time; ``chunk_time`` steps along time (zarr wants >= 1)."""
    chunks = [max(1, d) for d in shape]
    if spec.time_axis is not None:
        chunks[spec.time_axis] = max(1, min(spec.chunk_time, shape[spec.time_axis]))
    return tuple(chunks)


def time_blocks(time_axis: int | None, chunk_time: int, shape: tuple[int, ...]) -> list[tuple[int, int]]:
    """The [start, stop) time ranges of the chunks (one block for an array without a time axis)."""
    if time_axis is None:
        return [(0, 1)]
    n = shape[time_axis]
    return [(s, min(s + chunk_time, n)) for s in range(0, n, chunk_time)]
