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


KIND_OF = {"text-encode": "text", "denoise": "latents", "upscale": "latents", "temporal-upscale": "latents",
           "refine": "latents", "decode": "frames", "vocode": "audio"}


def predict(job: Job, stages: list[Stage], checkpoint_config: dict) -> dict[str, PredictedArtifact]:
    """Artifact name -> its predicted contents, for every artifact the plan writes."""
    t = checkpoint_config.get("transformer", {})
    dd = checkpoint_config.get("audio_vae", {}).get("model", {}).get("params", {}).get("ddconfig", {})
    voc = checkpoint_config.get("vocoder", {})
    c_video = int(t.get("in_channels", 128))
    c_audio, mel = int(dd.get("z_channels", 8)), int(dd.get("mel_bins", 64)) // 4
    a_frames = round(job.frames / job.fps * 25)
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
            n, fps = p.get("frames", job.frames), p.get("fps", job.fps)  # refine after temporal-upscale: 2N-1
            shapes = {"video": (1, c_video, (n - 1) // 8 + 1, h // 32, w // 32), "audio": (1, c_audio, a_frames, mel)}
            facts = {"frame_count": n, "height": h, "width": w, "fps": fps, "sigma": 0.0, "step": 0,
                     "total_steps": 0}
        elif kind == "frames":
            shapes = {"video": (job.output_frames, job.height, job.width, 3)}
            facts = {"frame_count": job.output_frames, "height": job.height, "width": job.width,
                     "fps": job.output_fps}
        else:
            rate = int(voc.get("output_sampling_rate", 24000))
            n = max(4 * a_frames - 3, 1) * rate // 100
            shapes = {"waveform": (2, n)}
            facts = {"sample_rate": rate, "channels": 2, "sample_count": n}
        out[st.output] = PredictedArtifact(Path(st.output), kind, shapes, facts, dict(p))
    # upscale doubles the latent size of its input, temporal-upscale its frames (F -> 2F-1)
    for st in stages:
        if st.name in ("upscale", "temporal-upscale"):
            src = out[st.inputs[0]]
            v, f = src.shapes["video"], src.facts
            if st.name == "upscale":
                video, facts = v[:3] + (v[3] * 2, v[4] * 2), {"width": f["width"] * 2, "height": f["height"] * 2}
            else:
                video = v[:2] + (2 * v[2] - 1,) + v[3:]
                facts = {"frame_count": 2 * f["frame_count"] - 1, "fps": 2 * f["fps"]}
            out[st.output].shapes = {**src.shapes, "video": video}
            out[st.output].facts = {**f, **facts}
            out[st.output].params = dict(src.params)
    return out
