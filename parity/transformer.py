"""Parity of the LTX-2 transformer with the official LTXModel / X0Model (fixture ``transformer_ltx2``)."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx

from . import NETWORK_TOL, ParityResult, compare, load_fixture
from ltx2.models.transformer import ModalityInput, Perturbation, load_transformer, to_x0

# (our name, fixture key): the preprocessor outputs and per-block states, reported as extra rows
_PREPARED = (("x", "x"), ("context", "context"), ("modulation", "timesteps"),
             ("embedded_timestep", "embedded_timestep"), ("cross_modulation", "cross_scale_shift_timestep"),
             ("cross_gate", "cross_gate_timestep"))
_ROPE = (("video", "video_positional_embeddings"), ("video_cross", "video_cross_positional_embeddings"),
         ("audio", "audio_positional_embeddings"), ("audio_cross", "audio_cross_positional_embeddings"))


def _modality(z: dict, prefix: str) -> ModalityInput:
    return ModalityInput(latent=mx.array(z[f"{prefix}_latent"]), sigma=mx.array(z[f"{prefix}_sigma"]),
                         timesteps=mx.array(z[f"{prefix}_timesteps"]), positions=z[f"{prefix}_positions"],
                         context=mx.array(z[f"{prefix}_context"]))


def check_transformer(directory: Path, name: str) -> list[ParityResult]:
    z = load_fixture(directory, name)
    model = load_transformer(Path(directory) / f"{name}.safetensors", dtype=mx.float32)
    video, audio = _modality(z, "video"), _modality(z, "audio")
    tables = model.positional_tables(video.positions, audio.positions)
    res: list[ParityResult] = []
    extra: list[ParityResult] = []  # intermediates: listed after the outputs

    def cmp(output: str, out, key: str, into: list | None = None) -> None:
        (res if into is None else into).append(compare(name, output, out, z[key], NETWORK_TOL))

    # plain pass, piece by piece, so the intermediates can be compared too
    vs, as_ = model.prepare(video, audio, tables)
    b = vs.x.shape[0]
    for i, blk in enumerate(model.transformer_blocks):
        vs, as_ = blk(vs, as_, model.block_skips(None, b, i))
        for tag, s in (("video", vs), ("audio", as_)):
            if f"intermediate_block{i}_{tag}_x" in z:
                cmp(f"block{i}_{tag}_x", s.x, f"intermediate_block{i}_{tag}_x", extra)
    v_vel, a_vel = model.finish(vs, as_)
    cmp("out_video_velocity", v_vel, "out_video_velocity")
    cmp("out_audio_velocity", a_vel, "out_audio_velocity")
    cmp("out_video_x0", to_x0(video, v_vel), "out_video_x0")
    cmp("out_audio_x0", to_x0(audio, a_vel), "out_audio_x0")

    for tag, pert in (("stg_block1", Perturbation.stg([1])), ("no_av_crossattn", Perturbation.isolate_modalities())):
        v0, a0 = model.denoise(video, audio, pert, tables)
        cmp(f"out_video_x0_{tag}", v0, f"out_video_x0_{tag}")
        cmp(f"out_audio_x0_{tag}", a0, f"out_audio_x0_{tag}")

    # preprocessor intermediates (debugging aid)
    vs0, as0 = model.prepare(video, audio, tables)
    for tag, s in (("video", vs0), ("audio", as0)):
        for ours, key in _PREPARED:
            cmp(f"pre_{tag}_{key}", getattr(s, ours), f"intermediate_pre_{tag}_{key}", extra)
    for ours, key in _ROPE:
        t = getattr(tables, ours)
        cmp(f"pre_{key}_cos", t.cos, f"intermediate_pre_{key}_cos", extra)
        cmp(f"pre_{key}_sin", t.sin, f"intermediate_pre_{key}_sin", extra)
    return res + extra
