"""Parity of the LTX-2 / LTX-2.3 transformer with the official LTXModel / X0Model (fixtures ``transformer_ltx2``,
``transformer_ltx23``: the same arrays in the ltx-core 1.0.0 sets and the v1.2.0 ones).

The two oracles differ in one rule, and this port follows v1.2.0: the audio<->video cross-attention's scale/shift
AdaLN takes each token's own timestep (sigma x denoise mask), its gate the other stream's sigma; ltx-core 1.0.0 fed
both from the other stream's sigma. The fixtures condition the first video latent frame (timestep 0 there, while
the audio runs at sigma), so every array computed through the audio<->video attention encodes the 1.0.0 rule in
the 1.0.0 sets: those comparisons (``OLD_AV_RULE``) are left out there. The v1.2.0 sets hold the same weights and
inputs, so each one is checked there under the v1.2.0 rule (plus ``*_x0_audio_sigma0p3``, audio and video at
different sigmas).
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import mlx.core as mx

from . import NETWORK_TOL, ParityResult, compare, load_fixture, oracle_version
from ltx2.models.transformer import LTX2Transformer, ModalityInput, Perturbation, load_transformer, to_x0
from ltx2.models.weights import CheckpointError, read_header

# (our name, fixture key): the preprocessor outputs and per-block states, reported as extra rows
_PREPARED = (("x", "x"), ("context", "context"), ("modulation", "timesteps"),
             ("embedded_timestep", "embedded_timestep"), ("cross_modulation", "cross_scale_shift_timestep"),
             ("cross_gate", "cross_gate_timestep"), ("prompt_modulation", "prompt_timestep"))
_ROPE = (("video", "video_positional_embeddings"), ("video_cross", "video_cross_positional_embeddings"),
         ("audio", "audio_positional_embeddings"), ("audio_cross", "audio_cross_positional_embeddings"))

# The comparisons of a 1.0.0 set that encode the 1.0.0 A/V AdaLN rule (they move by 0.3-7% under the v1.2.0 one):
# everything that runs the audio<->video attention with the conditioned video frame, and the scale/shift AdaLN
# inputs themselves (1.0.0: one row from the other stream's sigma; v1.2.0: one row per token). What is left in a
# 1.0.0 set (the no-A/V outputs, the other preprocessor outputs, the RoPE tables) is the same under both rules.
OLD_AV_RULE = frozenset(
    [f"out_{m}_{k}" for m in ("video", "audio") for k in ("velocity", "x0", "x0_stg_block1")]
    + [f"block{i}_{m}_x" for i in (0, 1) for m in ("video", "audio")]
    + [f"pre_{m}_cross_scale_shift_timestep" for m in ("video", "audio")])

# Oracle folders beside this checkout (../shared/oracle) that hold complete copies of fixture weights
ORACLE = Path(__file__).resolve().parents[2] / "shared" / "oracle"
V12_ENV = "LTX2_V12_FIXTURES"


class FixtureWeightsMissing(FileNotFoundError):
    """A set ships a fixture's weights header-only and no complete copy of them was found."""


def _table(path: Path) -> tuple[dict, dict]:
    h = read_header(path)
    cfg = json.loads(h.metadata.get("config", "{}")).get("transformer")
    return {k: (t.dtype, tuple(t.shape)) for k, t in h.tensors.items()}, cfg


def weights_file(directory: Path, name: str) -> Path:
    """The fixture's weights: its own file, or, where the set holds them header-only (the committed 1.0.0 seed0
    keeps the LTX-2.3 transformer as a header to stay small), a complete file with the same tensors (names, dtypes,
    shapes) and transformer config from the oracle's offset-0 sets ($LTX2_V12_FIXTURES, ../shared/oracle/fixtures
    and fixtures-v12 beside this checkout): the oracles draw these weights from the same seeds. The fixture's
    reference outputs then confirm the values."""
    own = Path(directory) / f"{name}.safetensors"
    if not read_header(own).truncated():
        return own
    want = _table(own)
    given = os.environ.get(V12_ENV)
    places = ([Path(given)] if given else []) + [ORACLE / "fixtures", ORACLE / "fixtures-v12"]
    for d in places:
        other = d / f"{name}.safetensors"
        try:
            if _table(other) == want and not read_header(other).truncated():
                return other
        except (OSError, CheckpointError, ValueError):
            continue
    raise FixtureWeightsMissing(f"{own} holds only a header and no complete copy of its weights was found in "
                                + ", ".join(str(d) for d in places))


def _modality(z: dict, prefix: str) -> ModalityInput:
    return ModalityInput(latent=mx.array(z[f"{prefix}_latent"]), sigma=mx.array(z[f"{prefix}_sigma"]),
                         timesteps=mx.array(z[f"{prefix}_timesteps"]), positions=z[f"{prefix}_positions"],
                         context=mx.array(z[f"{prefix}_context"]))


def denoise_av_rule_1_0_0(model: LTX2Transformer, video: ModalityInput,
                          audio: ModalityInput) -> tuple[mx.array, mx.array]:
    """x0 as ltx-core 1.0.0 computed it: every token's audio<->video scale/shift AdaLN from the OTHER stream's
    sigma. A replay for the 1.0.0 fixtures whose subject is not this rule (the fp8 and LoRA weight formats,
    parity/weights.py); the model itself follows v1.2.0."""
    c = model.config
    vs, as_ = model.prepare(video, audio)

    def old(s, other: ModalityInput, adaln):
        b = s.x.shape[0]
        sigma = mx.broadcast_to(mx.array(other.sigma, dtype=mx.float32).reshape(-1), (b,)).reshape(b, 1)
        return replace(s, cross_modulation=adaln(sigma * c.timestep_scale_multiplier)[0])

    vs = old(vs, audio, model.av_ca_video_scale_shift_adaln_single)
    as_ = old(as_, video, model.av_ca_audio_scale_shift_adaln_single)
    b = vs.x.shape[0]
    for i, blk in enumerate(model.transformer_blocks):
        vs, as_ = blk(vs, as_, model.block_skips(None, b, i))
    v_vel, a_vel = model.finish(vs, as_)
    return to_x0(video, v_vel), to_x0(audio, a_vel)


def check_transformer(directory: Path, name: str) -> list[ParityResult]:
    z = load_fixture(directory, name)
    model = load_transformer(weights_file(directory, name), dtype=mx.float32)
    # a 1.0.0 set: leave out what the 1.0.0 A/V AdaLN rule decides (see the module docstring)
    skip = OLD_AV_RULE if oracle_version(directory) == "1.0.0" else frozenset()
    video, audio = _modality(z, "video"), _modality(z, "audio")
    tables = model.positional_tables(video.positions, audio.positions)
    res: list[ParityResult] = []
    extra: list[ParityResult] = []  # intermediates: listed after the outputs

    seen: set[str] = set()

    def cmp(output: str, out, key: str, into: list | None = None) -> None:
        seen.add(key)
        if key in z and output not in skip:
            (res if into is None else into).append(compare(name, output, out, z[key], NETWORK_TOL))

    # plain pass, piece by piece, so the intermediates can be compared too
    vs, as_ = model.prepare(video, audio, tables)
    b = vs.x.shape[0]
    for i, blk in enumerate(model.transformer_blocks):
        vs, as_ = blk(vs, as_, model.block_skips(None, b, i))
        for tag, s in (("video", vs), ("audio", as_)):
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

    if "audio_sigma_0p3" in z:  # audio at another sigma than video: the A/V AdaLN rule shows
        audio3 = replace(audio, sigma=mx.array(z["audio_sigma_0p3"]), timesteps=mx.array(z["audio_timesteps_sigma0p3"]))
        v0, a0 = model.denoise(video, audio3, None, tables)
        cmp("out_video_x0_audio_sigma0p3", v0, "out_video_x0_audio_sigma0p3")
        cmp("out_audio_x0_audio_sigma0p3", a0, "out_audio_x0_audio_sigma0p3")

    # preprocessor intermediates (debugging aid)
    vs0, as0 = model.prepare(video, audio, tables)
    for tag, s in (("video", vs0), ("audio", as0)):
        for ours, key in _PREPARED:
            cmp(f"pre_{tag}_{key}", getattr(s, ours), f"intermediate_pre_{tag}_{key}", extra)
    for ours, key in _ROPE:
        t = getattr(tables, ours)
        cmp(f"pre_{key}_cos", t.cos, f"intermediate_pre_{key}_cos", extra)
        cmp(f"pre_{key}_sin", t.sin, f"intermediate_pre_{key}_sin", extra)
    # every output and intermediate the fixture holds is compared (or left out above, by name)
    unread = sorted(k for k in z if k.startswith(("out_", "intermediate_")) and k not in seen)
    if unread:
        extra.append(ParityResult(name, "-", None, NETWORK_TOL, "FAIL", "arrays not compared: " + ", ".join(unread)))
    return res + extra
