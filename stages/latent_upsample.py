"""What the upscale and temporal-upscale stages share: check the upsampler file, then read, upsample, write.

The video latent is un-normalised with the video VAE's per-channel statistics (from the checkpoint),
upsampled, and normalised again, as the official two-stage pipelines do for the spatial upsampler;
the audio latent is carried through unchanged. The output's facts follow the video latent's new
shape: a spatial upsampler scales height and width, a temporal one maps F latent frames to 2F-1,
i.e. 8(2F-2)+1 pixel frames at twice the frame rate (the same first and last frame times).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import mlx.core as mx

from ltx2.models.upsampler import (UPSAMPLER_KEYMAP, UpsamplerConfig, UpsamplerConfigError, load_latent_statistics, load_upsampler,
                                   upsample_latent)
from ltx2.models.upsampler.memory import activation_bytes
from ltx2.models.weights.source import open_source
from ltx2.models.weights.identify import slot_problem
from ltx2.spec.geometry import two_stage_factors

from .contract import BadInput, MemoryPlan, StageError
from .memory import compute_bytes, compute_of, weight_bytes
from .registry import Port, PredictedOutput, StageContext, StageDef, StageParams, readers_of


@lru_cache(maxsize=32)
def _scale_of(path: str, size: int, mtime_ns: int) -> float:
    return float(UpsamplerConfig.from_config(open_source(path, UPSAMPLER_KEYMAP).config()).spatial_scale)


def spatial_scale_of(path: str | Path) -> float:
    """The spatial scale of a latent upsampler file (2.0 or 1.5 for the official spatial ones): its header only."""
    st = Path(path).stat()
    try:
        return _scale_of(str(path), st.st_size, st.st_mtime_ns)
    except UpsamplerConfigError as e:
        raise BadInput(f"{path}: {e}") from e


def check_upsampler(ctx: StageContext, role: str) -> None:
    """Refuse (bad input) an upsampler file of the wrong kind for ``role`` (``spatial_upsampler`` or
    ``temporal_upsampler``), or a spatial one of another scale than the stage's ``scale`` parameter (the
    stage-1 size was chosen for it), before anything is loaded: headers only."""
    path = ctx.weights[role]
    bad = slot_problem(path, role, readers=readers_of)
    if bad:
        raise BadInput(f"{ctx.stage.name}: {role} weights {path} {bad[0]}; {bad[1]} (--weights {role}=PATH)")
    want = getattr(ctx.params, "scale", None)
    if role == "spatial_upsampler" and want is not None and spatial_scale_of(path) != float(want):
        raise BadInput(f"{ctx.stage.name}: {role} weights {path} upscale x{spatial_scale_of(path):g}, the stage was "
                       f"planned for x{float(want):g}; give scale={spatial_scale_of(path):g} (and a stage-1 size of "
                       f"target / {spatial_scale_of(path):g}), or the x{float(want):g} upsampler")


def upsample_memory(ctx: StageContext, role: str) -> MemoryPlan:
    """Weights of the upsampler of ``role``, the copy MLX makes of a conv weight in the official layout, and
    the activations of one upsampler call on the input's video latent (models/upsampler/memory.py), all at the
    compute width."""
    path = ctx.weights[role]
    _, _, f, h, w = ctx.inputs["latents"].shape("video")
    source = open_source(path, UPSAMPLER_KEYMAP)
    try:
        cfg = UpsamplerConfig.from_config(source.config())
    except UpsamplerConfigError as e:
        raise BadInput(f"{ctx.stage.name}: {path}: {e}") from e
    b = compute_bytes(ctx)
    copy = source.conv_copy_bytes(b)  # none where the file stores MLX's layout (`ltx2 convert`)
    return MemoryPlan(weight_bytes(path, ("",), bytes_per_element=b), copy + activation_bytes(cfg, (f, h, w), b))


def upsample_to_artifact(ctx: StageContext, role: str) -> None:
    """Upsample ``ctx.inputs["latents"]``'s video latent with the upsampler of ``role``; write the output."""
    lat = ctx.inputs["latents"]  # the upsampler file was checked first (the stage's check hook)
    upsampler = load_upsampler(ctx.weights[role], compute_of(ctx))
    stats = load_latent_statistics(ctx.weights["checkpoint"])
    ctx.progress.step(0, 1)
    video = upsample_latent(lat.read("video"), upsampler, stats)
    mx.eval(video)
    _, _, f0, h0, w0 = lat.shape("video")
    _, _, f1, h1, w1 = video.shape
    temporal = role == "temporal_upsampler"
    ok = (f1, h1, w1) == (2 * f0 - 1, h0, w0) if temporal else (f1, h1, w1) == (f0, *_scaled(ctx, h0, w0))
    if not ok:  # the slot check passed, so the network itself is wrong
        raise StageError(f"{ctx.stage.name}: the upsampler turned {f0}x{h0}x{w0} latents into {f1}x{h1}x{w1}")
    f = lat.facts
    w = ctx.writer()
    w.write_array("video", video)
    w.write_array("audio", lat.read("audio"))
    w.finalize(facts={"frame_count": 8 * (f1 - 1) + 1 if temporal else f["frame_count"],
                      "height": f["height"] * h1 // h0, "width": f["width"] * w1 // w0,
                      "fps": 2 * f["fps"] if temporal else f["fps"],
                      "sigma": f["sigma"], "step": f["step"], "total_steps": f["total_steps"]})
    ctx.progress.step(1, 1)


def _scaled(ctx: StageContext, h: int, w: int) -> tuple[int, int]:
    """Latent height and width after the spatial upsampler of the stage's ``scale`` (x1.5: ceil(3L/2), the rational
    resampler's blurred stride-2 output)."""
    up, down = two_stage_factors(getattr(ctx.params, "scale", 2.0))
    return -(-h * up // down), -(-w * up // down)


def predict_upsampled(ctx: StageContext, role: str) -> PredictedOutput:
    """The input's latents with the video x``scale`` in space (spatial) or F -> 2F-1 frames at 2x fps (temporal)."""
    lat = ctx.inputs["latents"]
    v, f = lat.shape("video"), lat.facts
    if role == "temporal_upsampler":
        video = v[:2] + (2 * v[2] - 1,) + v[3:]
        facts = {"frame_count": 2 * f["frame_count"] - 1, "fps": 2 * f["fps"]}
    else:
        h, w = _scaled(ctx, v[3], v[4])
        video = v[:3] + (h, w)
        facts = {"width": f["width"] * w // v[4], "height": f["height"] * h // v[3]}
    return PredictedOutput({"video": video, "audio": lat.shape("audio")}, {**f, **facts})


def upsampler_stage(name: str, role: str, params: type[StageParams], output_name: str, summary: str) -> StageDef:
    """The declaration of an upsampling stage (upscale, temporal-upscale): the same hooks on its upsampler
    ``role``; the checkpoint provides the video VAE's per-channel statistics (un-/re-normalisation)."""
    return StageDef(
        name=name, version=1, summary=summary, inputs={"latents": Port("latents")}, params=params,
        output_kind="latents", output_name=output_name, weights={role: None, "checkpoint": "latent_statistics"},
        check=lambda ctx: check_upsampler(ctx, role), estimate=lambda ctx: upsample_memory(ctx, role),
        run=lambda ctx: upsample_to_artifact(ctx, role), predict=lambda ctx: predict_upsampled(ctx, role),
        budget_fix="raise memory_budget",
    )
