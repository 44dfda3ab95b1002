"""Multi-modal guidance: which extra transformer passes a step needs, and how their x0s combine.

Per modality (video, audio) the guided prediction is

    pred = c + (cfg - 1)(c - uncond) + stg (c - perturbed) + (modality - 1)(c - isolated)
    pred *= r * std(c) / std(pred) + 1 - r            (rescale, when r != 0)

with c the conditional x0, ``uncond`` the x0 under the negative prompt, ``perturbed`` the x0 with
self-attention replaced by its value path in the STG blocks, ``isolated`` the x0 with the
audio<->video cross-attention switched off. std is over the whole tensor (all batch elements).

One pass serves both modalities: the uncond pass runs if either modality's cfg != 1, the perturbed
pass perturbs video self-attention in the video guider's blocks and audio self-attention in the
audio guider's blocks, and so on; a modality whose scale is neutral ignores that pass's output.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from enum import Enum

import mlx.core as mx

from ltx2.models.transformer.perturbations import ALL, Perturbation
from ltx2.spec.versions import DEFAULT_VERSION, GuidanceDefaults


@dataclass(frozen=True)
class GuiderParams:
    """Guidance settings of one modality. ``stg_blocks``: transformer block indices; None means every block."""

    cfg_scale: float = 1.0
    stg_scale: float = 0.0
    stg_blocks: tuple[int, ...] | None = ()
    rescale_scale: float = 0.0
    modality_scale: float = 1.0
    skip_step: int = 0  # >0: guidance is recomputed only every skip_step+1 steps, the last x0 reused between

    def __post_init__(self):
        if self.stg_blocks is not None:
            object.__setattr__(self, "stg_blocks", tuple(int(b) for b in self.stg_blocks))
        if int(self.skip_step) < 0:
            raise ValueError(f"skip_step={self.skip_step}: must be >= 0")

    @property
    def wants_uncond(self) -> bool:
        return not math.isclose(self.cfg_scale, 1.0)

    @property
    def wants_perturbed(self) -> bool:
        return not math.isclose(self.stg_scale, 0.0)

    @property
    def wants_isolated(self) -> bool:
        return not math.isclose(self.modality_scale, 1.0)

    def skips(self, step: int) -> bool:
        """True when step ``step`` reuses the previous x0 instead of running the model."""
        return self.skip_step != 0 and step % (self.skip_step + 1) != 0


# LTX-2 (19B) two-stage / one-stage defaults. LTX-2.3 uses STG block 28 instead of 29.
def _defaults(d: GuidanceDefaults) -> GuiderParams:
    return GuiderParams(cfg_scale=d.cfg, stg_scale=d.stg, stg_blocks=tuple(DEFAULT_VERSION.stg_blocks(48)),
                        rescale_scale=d.rescale, modality_scale=d.modality)


VIDEO_GUIDER_DEFAULTS = _defaults(DEFAULT_VERSION.video_guidance)
AUDIO_GUIDER_DEFAULTS = _defaults(DEFAULT_VERSION.audio_guidance)
NO_GUIDANCE = GuiderParams()  # distilled model / refine stage: the conditional pass alone


def _std(x: mx.array) -> mx.array:
    # unbiased, over every element; only the ratio of two stds is used, on tensors of equal size
    return mx.sqrt(mx.var(x.astype(mx.float32), ddof=1))


def guide(params: GuiderParams, cond: mx.array, uncond: mx.array | None = None, perturbed: mx.array | None = None,
          isolated: mx.array | None = None) -> mx.array:
    """The guided x0 of one modality from the x0s of the passes that ran (None: pass not run, counts as 0)."""
    c = cond.astype(mx.float32)

    def term(scale: float, other: mx.array | None) -> mx.array:
        return scale * (c - (0.0 if other is None else other.astype(mx.float32)))

    pred = (c + term(params.cfg_scale - 1, uncond) + term(params.stg_scale, perturbed)
            + term(params.modality_scale - 1, isolated))
    if params.rescale_scale != 0:
        factor = _std(c) / _std(pred)
        pred = pred * (params.rescale_scale * factor + (1 - params.rescale_scale))
    return pred.astype(cond.dtype)


class PassKind(str, Enum):
    COND = "cond"  # positive prompt, nothing perturbed
    UNCOND = "uncond"  # negative prompt
    PERTURBED = "perturbed"  # STG: self-attention -> value path in the STG blocks
    ISOLATED = "isolated"  # no audio<->video cross-attention in any block


@dataclass(frozen=True)
class GuidancePass:
    """One transformer pass of a guided step: its prompt and what it switches off.

    ``stg_*_blocks``: blocks whose self-attention is replaced by its value path (None = every block,
    () = none). ``video_enabled``/``audio_enabled`` False: that modality is skipped this step
    (skip_step) and its output is ignored.
    """

    kind: PassKind
    negative_context: bool = False
    stg_video_blocks: tuple[int, ...] | None = ()
    stg_audio_blocks: tuple[int, ...] | None = ()
    isolate_modalities: bool = False
    video_enabled: bool = True
    audio_enabled: bool = True

    def perturbation(self):
        """This pass as the transformer's ``Perturbation`` (ltx2.models.transformer.perturbations)."""
        def sel(blocks):
            return ALL if blocks is None else blocks

        return Perturbation(video_self_attn=sel(self.stg_video_blocks), audio_self_attn=sel(self.stg_audio_blocks),
                            a2v_cross_attn=ALL if self.isolate_modalities else None,
                            v2a_cross_attn=ALL if self.isolate_modalities else None)


def plan_passes(video: GuiderParams, audio: GuiderParams, step: int = 0) -> tuple[GuidancePass, ...]:
    """The passes step ``step`` needs, conditional first; () when both modalities reuse their last x0."""
    v_skip, a_skip = video.skips(step), audio.skips(step)
    if v_skip and a_skip:
        return ()
    # passes built on the positive inputs carry the skip; the negative-prompt pass is always full
    on = dict(video_enabled=not v_skip, audio_enabled=not a_skip)
    passes = [GuidancePass(PassKind.COND, **on)]
    if video.wants_uncond or audio.wants_uncond:
        passes.append(GuidancePass(PassKind.UNCOND, negative_context=True))
    if video.wants_perturbed or audio.wants_perturbed:
        passes.append(GuidancePass(PassKind.PERTURBED,
                                   stg_video_blocks=video.stg_blocks if video.wants_perturbed else (),
                                   stg_audio_blocks=audio.stg_blocks if audio.wants_perturbed else (), **on))
    if video.wants_isolated or audio.wants_isolated:
        passes.append(GuidancePass(PassKind.ISOLATED, isolate_modalities=True, **on))
    return tuple(passes)


# --- batching the passes ----------------------------------------------------------------------------
# A runner evaluates several passes in one transformer call by stacking them on the batch axis,
# pass-major: rows [i*B, (i+1)*B) of every input and output belong to passes[i].

Runner = Callable[[Sequence[GuidancePass]], tuple[mx.array, mx.array]]


def repeat_for_passes(x: mx.array, n_passes: int) -> mx.array:
    """Stack ``x`` (batch-first) once per pass: latents, positions, timesteps."""
    return x if n_passes == 1 else mx.concatenate([x] * n_passes, axis=0)


def pass_contexts(passes: Sequence[GuidancePass], positive: mx.array, negative: mx.array | None) -> mx.array:
    """The text context rows of a stacked call: each pass's prompt (positive or negative)."""
    if negative is None and any(p.negative_context for p in passes):
        raise ValueError("a guided pass needs the negative prompt's context, but none was given "
                         "(encode a negative prompt, or set cfg_scale to 1)")
    rows = [negative if p.negative_context else positive for p in passes]
    return rows[0] if len(rows) == 1 else mx.concatenate(rows, axis=0)


def pass_perturbations(passes: Sequence[GuidancePass], batch: int) -> list:
    """One transformer ``Perturbation`` per row of a stacked call of ``batch`` elements per pass."""
    return [p.perturbation() for p in passes for _ in range(batch)]


def _chunks(passes: Sequence[GuidancePass], per_call: int | None) -> list[tuple[GuidancePass, ...]]:
    # rows of one call must agree on which modalities run; then cut to the size limit
    groups: list[list[GuidancePass]] = []
    for p in passes:
        if groups and (groups[-1][0].video_enabled, groups[-1][0].audio_enabled) == (p.video_enabled, p.audio_enabled) \
                and (per_call is None or len(groups[-1]) < per_call):
            groups[-1].append(p)
        else:
            groups.append([p])
    return [tuple(g) for g in groups]


def guided_x0(run: Runner, video: GuiderParams, audio: GuiderParams, step: int = 0,
              last: tuple[mx.array, mx.array] | None = None,
              passes_per_call: int | None = None) -> tuple[mx.array, mx.array]:
    """The guided (video_x0, audio_x0) of one step.

    ``run(passes)`` evaluates the model on the passes stacked pass-major on the batch axis (see
    ``repeat_for_passes``, ``pass_contexts``, ``pass_perturbations``) and returns (video_x0, audio_x0)
    with ``len(passes) * B`` rows. ``passes_per_call`` caps the passes per call (1: one at a time,
    for small memory; None: all at once). ``last``: the previous step's guided x0s, reused by a
    modality whose ``skip_step`` skips this step.
    """
    passes = plan_passes(video, audio, step)
    if (video.skips(step) or audio.skips(step)) and last is None:
        raise ValueError(f"step {step} reuses the previous x0 (skip_step) but none was given")
    if not passes:
        return last
    if passes_per_call is not None and passes_per_call < 1:
        raise ValueError(f"passes_per_call={passes_per_call}: must be >= 1")
    out: dict[PassKind, tuple[mx.array, mx.array]] = {}
    for chunk in _chunks(passes, passes_per_call):
        v, a = run(chunk)
        if v.shape[0] % len(chunk) or a.shape[0] % len(chunk):
            raise ValueError(f"runner returned {v.shape[0]} video / {a.shape[0]} audio rows for {len(chunk)} passes")
        bv, ba = v.shape[0] // len(chunk), a.shape[0] // len(chunk)
        for i, p in enumerate(chunk):
            out[p.kind] = (v[i * bv:(i + 1) * bv], a[i * ba:(i + 1) * ba])

    def get(kind: PassKind, m: int):
        return out[kind][m] if kind in out else None

    results = []
    for m, params in enumerate((video, audio)):
        if params.skips(step):
            results.append(last[m])
        else:
            results.append(guide(params, get(PassKind.COND, m), get(PassKind.UNCOND, m), get(PassKind.PERTURBED, m),
                                 get(PassKind.ISOLATED, m)))
    return results[0], results[1]


def with_stg_blocks(params: GuiderParams, blocks: Sequence[int] | None) -> GuiderParams:
    """``params`` with other STG blocks (e.g. 28 for LTX-2.3 checkpoints)."""
    return replace(params, stg_blocks=None if blocks is None else tuple(blocks))
