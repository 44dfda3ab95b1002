"""What each artifact of a plan will hold (array shapes, facts), before anything has run.

`ltx2 plan` asks every stage for its memory estimate; a stage estimates from its inputs' shapes, so
for inputs that do not exist yet this module stands in for them with the shapes the plan implies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .graph import Stage
from .job import Job


@dataclass
class PredictedArtifact:
    """Quacks like artifacts_schema.Artifact for what estimates read: shape(), facts, params, kind."""

    path: Path
    kind: str
    shapes: dict[str, tuple[int, ...]]
    facts: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    cache_key: str = ""

    def shape(self, name: str) -> tuple[int, ...]:
        return self.shapes[name]


KIND_OF = {"text-encode": "text", "denoise": "latents", "upscale": "latents", "refine": "latents",
           "decode": "frames", "vocode": "audio"}


def predict(job: Job, stages: list[Stage], checkpoint_config: dict) -> dict[str, PredictedArtifact]:
    """Artifact name -> its predicted contents, for every artifact the plan writes."""
    t = checkpoint_config.get("transformer", {})
    dd = checkpoint_config.get("audio_vae", {}).get("model", {}).get("params", {}).get("ddconfig", {})
    voc = checkpoint_config.get("vocoder", {})
    c_video = int(t.get("in_channels", 128))
    c_audio, mel = int(dd.get("z_channels", 8)), int(dd.get("mel_bins", 64)) // 4
    a_frames = round(job.frames / job.fps * 25)
    lat_f = (job.frames - 1) // 8 + 1
    out: dict[str, PredictedArtifact] = {}
    for st in stages:
        kind = KIND_OF.get(st.name)
        if kind is None:
            continue
        p = st.params
        if kind == "text":
            shapes = {"video_context": (1, 1024, int(t.get("caption_channels", 3840)))}
            facts = {"sequence_length": 1024, "has_negative": bool(p.get("negative_prompt"))}
        elif kind == "latents":
            w, h = (p["width"], p["height"]) if "width" in p else (job.width, job.height)
            shapes = {"video": (1, c_video, lat_f, h // 32, w // 32), "audio": (1, c_audio, a_frames, mel)}
            facts = {"frame_count": job.frames, "height": h, "width": w, "fps": job.fps, "sigma": 0.0, "step": 0,
                     "total_steps": 0}
        elif kind == "frames":
            shapes = {"video": (job.frames, job.height, job.width, 3)}
            facts = {"frame_count": job.frames, "height": job.height, "width": job.width, "fps": job.fps}
        else:
            rate = int(voc.get("output_sampling_rate", 24000))
            n = max(4 * a_frames - 3, 1) * rate // 100
            shapes = {"waveform": (2, n)}
            facts = {"sample_rate": rate, "channels": 2, "sample_count": n}
        out[st.output] = PredictedArtifact(Path(st.output), kind, shapes, facts, dict(p))
    # upscale doubles the latent size of its input
    for st in stages:
        if st.name == "upscale":
            src = out[st.inputs[0]]
            v = src.shapes["video"]
            out[st.output].shapes = {**src.shapes, "video": v[:3] + (v[3] * 2, v[4] * 2)}
            out[st.output].facts = {**src.facts, "width": src.facts["width"] * 2, "height": src.facts["height"] * 2}
            out[st.output].params = dict(out[st.inputs[0]].params)
    return out
