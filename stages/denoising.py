"""The denoising loop shared by the denoise (stage 1) and refine (stage 2) stages.

State lives in token layout (patchified, (B, T, C)), as the transformer reads it. After each step
the caller's ``on_step`` gets the new state, so a stage can checkpoint it and a killed process
resumes from its last completed step with bit-identical results (the loop is deterministic given
the state: no random draw happens inside it).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import mlx.core as mx
import numpy as np

from ltx2.models.transformer import LTX2Transformer, ModalityInput
from ltx2.models.transformer.attention import DEFAULT_QUERY_CHUNK
from ltx2.models.transformer.config import TransformerConfig
from ltx2.models.transformer.streaming import load_transformer_mode
from ltx2.spec.versions import model_version

from .contract import BadInput, MemoryPlan
from .memory import (COMPUTE_BYTES, cached_header, compute_bytes, compute_of, lora_block_bytes, transformer_held,
                     weights_mode)
from .params import FixedSchedule, Guidance
from .sampling import (GuiderParams, blend_clean, euler_step, gaussian_noise, guided_x0, ltx2_sigmas, noise_key,
                       pass_contexts, pass_perturbations, patchify_audio, patchify_video, repeat_for_passes,
                       res2s_schedule, res2s_step, unpatchify_audio, unpatchify_video)
from .sampling import conditioning as cond_items
from .sampling.conditioning import TokenLatents


@dataclass
class TokenState:
    video: mx.array  # (B, Tv, C) noisy video tokens
    audio: mx.array  # (B, Ta, Ca)


@dataclass
class Conditioning:
    """Prompt contexts and the fixed per-token facts of a run (positions, masks, clean latents)."""

    video_context: mx.array
    audio_context: mx.array
    video_positions: np.ndarray | mx.array
    audio_positions: np.ndarray | mx.array
    negative_video_context: mx.array | None = None
    negative_audio_context: mx.array | None = None
    video_mask: mx.array | None = None  # (B, Tv) 1 = denoise, 0 = keep clean (conditioning); None: all 1
    audio_mask: mx.array | None = None
    video_clean: mx.array | None = None  # the clean tokens kept where the mask is 0
    audio_clean: mx.array | None = None
    video_attention: np.ndarray | None = None  # (B, Tv, Tv) self-attention strengths in [0, 1] (IC-LoRA references)
    video_frozen: bool = False  # the stream is kept as given: its sigma is 0 (prompt AdaLN, the A/V gates)
    audio_frozen: bool = False  # (audio-to-video's soundtrack)

    def with_states(self, video: TokenLatents, audio: TokenLatents) -> "Conditioning":
        """These contexts with the per-token facts of two conditioned stream states."""
        def mask(s: TokenLatents):
            return None if np.all(s.mask == 1.0) else mx.array(s.mask)
        return replace(self, video_positions=video.positions, audio_positions=audio.positions,
                       video_mask=mask(video), audio_mask=mask(audio), video_clean=video.clean, audio_clean=audio.clean,
                       video_attention=video.attention, video_frozen=video.frozen, audio_frozen=audio.frozen)


# noise(step index, "mid" | "step", "video" | "audio", shape) -> a standard normal draw (res_2s injections)
StepNoise = Callable[[int, str, str, tuple[int, ...]], mx.array]
SAMPLERS = ("euler", "res_2s")


class Sampler:
    """Sampling of the joint video+audio state, guided (MultiModalGuider) or not: Euler, or res_2s (the HQ
    pipeline's second-order sampler, which also needs ``noise``)."""

    def __init__(self, model: LTX2Transformer, cond: Conditioning,
                 guidance: tuple[GuiderParams, GuiderParams] | None = None, passes_per_call: int | None = None,
                 sampler: str = "euler", noise: StepNoise | None = None):
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler {sampler!r}: use one of {', '.join(SAMPLERS)}")
        if sampler == "res_2s" and noise is None:
            raise ValueError("the res_2s sampler injects noise at every step: give noise")
        self.model = model
        self.cond = cond
        self.guidance = guidance
        self.passes_per_call = passes_per_call
        self.sampler = sampler
        self.noise = noise
        self._tables: dict[int, object] = {}

    def _positions_tables(self, n: int):
        # RoPE tables depend only on positions: build once per stacked batch size and reuse every step
        if n not in self._tables:
            vp = np.asarray(self.cond.video_positions)
            ap = np.asarray(self.cond.audio_positions)
            self._tables[n] = self.model.positional_tables(np.concatenate([vp] * n), np.concatenate([ap] * n))
        return self._tables[n]

    def _inputs(self, state: TokenState, sigma: float, n: int, vctx, actx, enabled=(True, True)):
        def mask(m, x):
            return mx.ones(x.shape[:2], dtype=mx.float32) if m is None else m.astype(mx.float32)

        c = self.cond
        vm, am = mask(c.video_mask, state.video), mask(c.audio_mask, state.audio)
        # a frozen stream runs at sigma 0 (its timesteps are 0 through its mask already)
        sv = mx.array(0.0 if c.video_frozen else sigma, dtype=mx.float32)
        sa = mx.array(0.0 if c.audio_frozen else sigma, dtype=mx.float32)
        attention = None if c.video_attention is None else repeat_for_passes(mx.array(c.video_attention), n)
        video = ModalityInput(latent=repeat_for_passes(state.video, n), sigma=sv,
                              timesteps=repeat_for_passes(vm * sv, n), positions=None, context=vctx,
                              attention_mask=attention, enabled=enabled[0])
        audio = ModalityInput(latent=repeat_for_passes(state.audio, n), sigma=sa,
                              timesteps=repeat_for_passes(am * sa, n), positions=None, context=actx,
                              enabled=enabled[1])
        return video, audio

    def x0(self, state: TokenState, sigma: float, step: int,
           last: tuple[mx.array, mx.array] | None = None) -> tuple[mx.array, mx.array]:
        """The (guided) clean-latent prediction for one step."""
        c = self.cond
        if self.guidance is None:
            v, a = self._inputs(state, sigma, 1, c.video_context, c.audio_context)
            return self.model.denoise(v, a, None, self._positions_tables(1))
        b = state.video.shape[0]

        vg, ag = self.guidance
        # a stream whose guider carries no negative prompt reads its positive one in the unconditional pass (the
        # official rule; audio-to-video guides only the video)
        neg_v = c.negative_video_context if c.negative_video_context is not None or vg.wants_uncond else c.video_context
        neg_a = c.negative_audio_context if c.negative_audio_context is not None or ag.wants_uncond else c.audio_context

        def run(passes: Sequence) -> tuple[mx.array, mx.array]:
            n = len(passes)
            enabled = (passes[0].video_enabled, passes[0].audio_enabled)
            v, a = self._inputs(state, sigma, n, pass_contexts(passes, c.video_context, neg_v),
                                pass_contexts(passes, c.audio_context, neg_a), enabled)
            return self.model.denoise(v, a, pass_perturbations(passes, b), self._positions_tables(n))

        if last is None and (vg.skips(step) or ag.skips(step)):
            # a run resumed on a skip_step step has no previous x0 to reuse: compute this step in full
            # (the one place a resumed render can differ from an uninterrupted one; skip_step 0 never does)
            step = 0
        return guided_x0(run, vg, ag, step=step, last=last, passes_per_call=self.passes_per_call)

    def _keep(self, i: int, x: mx.array) -> mx.array:
        """Stream ``i`` (0 video, 1 audio) with its conditioning tokens put back clean."""
        c = self.cond
        mask, clean = (c.video_mask, c.video_clean) if i == 0 else (c.audio_mask, c.audio_clean)
        return x if mask is None else blend_clean(x, mask[..., None], clean)

    def run(self, state: TokenState, sigmas: Sequence[float], start: int = 0,
            on_step: Callable[[int, TokenState], None] | None = None) -> TokenState:
        """Steps ``start .. len(sigmas)-2``; ``on_step(k, state)`` after step k completes (k counts from 1).

        res_2s walks ``sigmas`` as :func:`sampling.res2s_schedule` gives them (the caller passes that list)."""
        if self.sampler == "res_2s":
            return self._run_res2s(state, sigmas, start, on_step)
        last = None
        for i in range(start, len(sigmas) - 1):
            v0, a0 = self.x0(state, float(sigmas[i]), i, last)
            last = (v0, a0)
            state = TokenState(euler_step(state.video, self._keep(0, v0), sigmas[i], sigmas[i + 1]),
                               euler_step(state.audio, self._keep(1, a0), sigmas[i], sigmas[i + 1]))
            mx.eval(state.video, state.audio)
            if on_step is not None:
                on_step(i + 1, state)
        return state

    def _run_res2s(self, state: TokenState, sigmas: Sequence[float], start: int,
                   on_step: Callable[[int, TokenState], None] | None) -> TokenState:
        # Each step depends on the state and the step index alone (its noise keys are named by the index), so the
        # per-step checkpoint is all a resumed run needs. ``last``: the guided x0 a skip_step step reuses (the
        # official loop's last computed prediction is the previous step's midpoint one).
        last = None
        for i in range(start, len(sigmas) - 1):
            def denoise(xs, sigma, stage, i=i):
                nonlocal last
                # the midpoint evaluation is never a skipped step (the reference calls it as step 0)
                v0, a0 = self.x0(TokenState(*xs), sigma, i if stage == "step" else 0, last)
                last = (v0, a0)
                return self._keep(0, v0), self._keep(1, a0)

            def noise(stage, stream, shape, i=i):
                return self.noise(i, stage, ("video", "audio")[stream], shape)

            v, a = res2s_step((state.video, state.audio), sigmas[i], sigmas[i + 1], denoise, noise, self._keep)
            state = TokenState(v, a)
            mx.eval(state.video, state.audio)
            if on_step is not None:
                on_step(i + 1, state)
        return state


# ---------------------------------------------------------------------------------------------------
# What denoise and refine share as stages: read the text, resolve the schedule and guidance, resume
# from a partial artifact, checkpoint after every step, write the latents artifact.

@dataclass(frozen=True)
class LatentLayout:
    """The latent geometry a checkpoint implies (video channels; audio channels x mel bins)."""

    video_channels: int
    audio_channels: int
    audio_mel_bins: int
    model_version: str
    num_layers: int

    @classmethod
    def from_checkpoint(cls, path) -> "LatentLayout":
        header = cached_header(path)
        cfg = header.config()
        t = cfg.get("transformer", {})
        dd = cfg.get("audio_vae", {}).get("model", {}).get("params", {}).get("ddconfig", {})
        z, mel = int(dd.get("z_channels", 8)), int(dd.get("mel_bins", 64)) // 4
        audio_in = int(t.get("audio_in_channels", z * mel))
        if z * mel != audio_in:
            raise ValueError(f"{path}: audio VAE latent {z} x {mel} does not match the transformer's "
                             f"audio_in_channels {audio_in}")
        return cls(int(t.get("in_channels", 128)), z, mel, str(header.metadata.get("model_version", "2.0")),
                   int(t.get("num_layers", 48)))


def check_transformer(ctx) -> LatentLayout:
    """Headers-only: the checkpoint's transformer config is one this port runs (LTX-2 or LTX-2.3; a later
    version's options are refused, by name), and its latent layout is consistent. Bad input, found when the job
    is planned."""
    ckpt = ctx.weights["checkpoint"]
    try:
        TransformerConfig.from_config(cached_header(ckpt).config())
        return LatentLayout.from_checkpoint(ckpt)
    except ValueError as e:
        raise BadInput(f"{ctx.stage.name}: {ckpt}: {e}") from e


def sigmas_for(schedule, layout: LatentLayout) -> list[float]:
    """The stage's sigma list from its ``schedule`` parameter (fixed list, or LTX2Scheduler steps; steps None:
    the checkpoint version's official count)."""
    if isinstance(schedule, FixedSchedule):
        return [float(s) for s in schedule.sigmas]
    steps = schedule.steps if schedule.steps is not None else model_version(layout.model_version).official_steps
    return [float(s) for s in np.asarray(ltx2_sigmas(steps))]


def stg_blocks(guidance: Guidance, layout: LatentLayout) -> dict[str, list[int]]:
    """Each stream's STG blocks (None: the checkpoint version's official ones), refused when out of range."""
    out = {}
    for m in ("video", "audio"):
        blocks = getattr(guidance, m).stg_blocks
        if blocks is None:
            blocks = model_version(layout.model_version).stg_blocks(layout.num_layers)
        bad = [b for b in blocks if not 0 <= int(b) < layout.num_layers]
        if bad:
            raise BadInput(f"guidance.{m}.stg_blocks {bad}: the transformer has blocks 0..{layout.num_layers - 1}; "
                           f"use block numbers in that range, or leave stg_blocks out for the official choice")
        out[m] = list(blocks)
    return out


def guider_params(guidance: Guidance | None, layout: LatentLayout) -> tuple[GuiderParams, GuiderParams] | None:
    """Per-modality guider settings from the guidance parameter (None: unguided, as distilled and refine)."""
    if guidance is None:
        return None
    blocks = stg_blocks(guidance, layout)
    out = []
    for m in ("video", "audio"):
        g = getattr(guidance, m)
        out.append(GuiderParams(cfg_scale=float(g.cfg), stg_scale=float(g.stg), stg_blocks=tuple(blocks[m]),
                                rescale_scale=float(g.rescale), modality_scale=float(g.modality),
                                skip_step=int(g.skip_step)))
    return out[0], out[1]


def text_conditioning(text, guidance, audio_guided: bool = True) -> Conditioning:
    """Contexts from a text artifact; the negative ones only when guidance asks for them (the audio's only when
    the audio is guided: a frozen soundtrack's guider has none, as in the official A2V pipeline)."""
    needs_negative = guidance is not None and any(g.wants_uncond for g in guidance)
    if needs_negative and not text.facts.get("has_negative"):
        raise BadInput(f"{text.path}: guidance uses CFG (cfg != 1) but this text artifact has no negative prompt; "
                       "re-run text-encode with a negative_prompt, or set cfg to 1")
    neg = (lambda k: text.read("negative_" + k)) if needs_negative else (lambda k: None)  # noqa: E731
    return Conditioning(video_context=text.read("video_context"), audio_context=text.read("audio_context"),
                        video_positions=None, audio_positions=None, negative_video_context=neg("video_context"),
                        negative_audio_context=neg("audio_context") if audio_guided else None)


def step_noise(seed: int, stage: str) -> StepNoise:
    """The res_2s injections' noise of a stage: one stream per step, injection and modality, named by the step index
    (so a resumed run draws what the uninterrupted one did)."""
    def draw(step: int, where: str, stream: str, shape: tuple[int, ...]) -> mx.array:
        return gaussian_noise(noise_key(seed, stage, "res_2s", step, where, stream), shape)
    return draw


def conditioned_states(ctx, layout: LatentLayout, grid: tuple[int, int, int], audio_frames: int,
                       video_initial: mx.array | None = None,
                       audio_initial: mx.array | None = None) -> tuple[TokenLatents, TokenLatents]:
    """Both streams' states before noise: from the initial latents (None: empty), the ``conditioning`` inputs
    applied as their ``conditioning`` parameters say, in order (a retake ``source`` sets a stream's initial latent
    and the ``retake`` window which of its tokens are regenerated; a ``frozen`` soundtrack replaces the audio)."""
    p = ctx.params
    arts = list(ctx.inputs.get("conditioning", []))
    given = list(getattr(p, "conditioning", []))
    if len(arts) != len(given):
        raise BadInput(f"{ctx.stage.name}: {len(arts)} conditioning input(s) but {len(given)} conditioning "
                       "parameter(s); give one {use: ...} per --in conditioning=PATH, in the same order")
    f, h, w = grid
    sources = {"video": None, "audio": None}
    frozen_audio = None
    for item, art in zip(given, arts):
        medium = art.facts.get("medium")
        if item.use == "source":
            sources["audio" if medium == "audio" else "video"] = _cond_latent(ctx, art, medium)
        elif item.use == "frozen":
            if medium != "audio":
                raise BadInput(f"{ctx.stage.name}: {art.path} is a {medium} conditioning; use frozen takes audio")
            frozen_audio = _cond_latent(ctx, art, medium)
    v_init = sources["video"] if sources["video"] is not None else video_initial
    a_init = frozen_audio if frozen_audio is not None else sources["audio"] if sources["audio"] is not None \
        else audio_initial
    try:
        video = cond_items.video_tokens(grid, layout.video_channels, float(p.fps), initial=v_init)
        audio = cond_items.audio_tokens(audio_frames, layout.audio_channels, layout.audio_mel_bins, initial=a_init)
    except ValueError as e:
        raise BadInput(f"{ctx.stage.name}: a conditioning latent does not fit this stage's grid: {e}") from e
    for item, art in zip(given, arts):
        if item.use in ("source", "frozen"):
            continue
        lat = _cond_latent(ctx, art, art.facts.get("medium"))
        if lat.ndim != 5:
            raise BadInput(f"{ctx.stage.name}: {art.path} holds audio; use {item.use} takes an image or video")
        try:
            if item.use == "replace":
                if tuple(lat.shape[3:]) != (h, w):
                    raise ValueError(f"its latent is {lat.shape[3]}x{lat.shape[4]}, the clip's {h}x{w} (encode it at "
                                     f"{p.width}x{p.height})")
                video = cond_items.replace_frame(video, lat, cond_items.latent_index_of(item.frame), item.strength)
            elif item.use == "keyframe":
                video = cond_items.append(video, lat, cond_items.keyframe_positions(lat.shape, item.frame, p.fps),
                                          item.strength)
            else:  # reference (IC-LoRA)
                weights = art.read("attention") if "attention" in art.arrays else None
                if weights is not None:
                    attention = np.asarray(weights, np.float32) * np.float32(item.attention_strength)
                else:
                    attention = item.attention_strength if item.attention_strength < 1.0 else None
                video = cond_items.append(video, lat, cond_items.reference_positions(lat.shape, p.fps,
                                                                                     item.downscale_factor),
                                          item.strength, attention=attention)
        except ValueError as e:
            raise BadInput(f"{ctx.stage.name}: conditioning {art.path} ({item.use}, frame {item.frame}): {e}") from e
    window = getattr(p, "retake", None)
    if window is not None:
        if sources["video"] is not None:
            video = cond_items.video_window(video, window.start, window.end)
        if sources["audio"] is not None:
            audio = cond_items.audio_window(audio, window.start, window.end)
    if frozen_audio is not None:
        audio = cond_items.frozen(audio)
    return video, audio


def check_conditioning(ctx, grid: tuple[int, int, int], audio_frames: int) -> None:
    """Headers-only: one parameter per conditioning input, each input of the medium its use takes and on this
    stage's grid, each frame inside the clip. Bad input, found when the job is planned."""
    arts = list(ctx.inputs.get("conditioning", []))
    given = list(getattr(ctx.params, "conditioning", []))
    name, (f, h, w), frames = ctx.stage.name, grid, ctx.params.frames
    if len(arts) != len(given):
        raise BadInput(f"{name}: {len(arts)} conditioning input(s) but {len(given)} conditioning parameter(s); give "
                       "one {use: ...} per --in conditioning=PATH, in the same order")
    for i, (item, art) in enumerate(zip(given, arts)):
        where = f"{name}: conditioning[{i}] ({item.use}, {art.path})"
        medium = art.facts.get("medium")
        want = ("audio",) if item.use == "frozen" else ("video", "audio") if item.use == "source" else (
            "image",) if item.use in ("replace", "keyframe") else ("video",)
        if medium not in want:
            raise BadInput(f"{where}: is a {medium} encoding; {item.use} takes {' or '.join(want)}")
        if medium == "audio":
            if art.shape("audio")[2] != audio_frames:
                raise BadInput(f"{where}: holds {art.shape('audio')[2]} audio latent frames, the clip {audio_frames}; "
                               f"encode it for {frames} frames at {ctx.params.fps} fps")
            continue
        _, _, cf, ch, cw = art.shape("video")
        if item.use in ("replace", "keyframe", "source") and (ch, cw) != (h, w):
            raise BadInput(f"{where}: its latent is {ch}x{cw} cells, this stage's {h}x{w}: encode it at "
                           f"{ctx.params.width}x{ctx.params.height}")
        if item.use == "source" and cf != f:
            raise BadInput(f"{where}: holds {cf} latent frames, the clip {f}: encode it for {frames} frames")
        if item.use in ("replace", "keyframe") and not 0 <= item.frame < frames:
            raise BadInput(f"{where}: frame {item.frame} is outside the clip's frames 0..{frames - 1}")
        if item.use == "replace" and item.frame % 8:
            raise BadInput(f"{where}: frame {item.frame} is not on the latent grid (a multiple of 8); use "
                           f"{item.frame // 8 * 8}, or a keyframe")
    if getattr(ctx.params, "retake", None) is not None and not any(i.use == "source" for i in given):
        raise BadInput(f"{name}: retake is set but no conditioning input is a source to retake")


def _cond_latent(ctx, art, medium) -> mx.array:
    name = "audio" if medium == "audio" else "video"
    if name not in art.arrays:
        raise BadInput(f"{ctx.stage.name}: {art.path} holds no {name} latent")
    return art.read(name).astype(mx.float32)


def sample_to_artifact(ctx, layout: LatentLayout, grid: tuple[int, int, int], audio_frames: int,
                       sigmas: list[float], guidance, states: Callable[[], tuple[TokenLatents, TokenLatents]],
                       noise_scale: float, sampler: str = "euler") -> None:
    """Run the sampler from the conditioned ``states()`` noised to ``noise_scale`` with the stage's seeded noise
    (a frozen stream is not noised), or from the partial artifact's last step, and write latents.

    ``grid``: the video latent (frames, height, width); the pixel facts come from ``ctx.params``. res_2s walks
    ``res2s_schedule(sigmas)`` (a final 0 reached through 0.0011), and its steps are what the checkpoints count.
    Appended conditioning tokens are checkpointed too (``video_appended``), so a resumed run continues them.
    """
    p = ctx.params
    if sampler == "res_2s":
        sigmas = res2s_schedule(sigmas)
    f, h, w = grid
    total = len(sigmas) - 1
    writer = ctx.writer()
    if writer.complete:
        writer.finalize()
        return
    video, audio = states()
    if audio.frozen and guidance is not None:
        guidance = (guidance[0], GuiderParams())  # the official A2V pipelines guide only the video
    if writer.progress is not None:
        snap = writer.load_checkpoint()
        v = patchify_video(snap["video"])
        if "video_appended" in snap:
            v = mx.concatenate([v, snap["video_appended"]], axis=1)
        if v.shape[1] != video.tokens:
            raise BadInput(f"{writer.partial}: its checkpoint holds {v.shape[1]} video tokens, this run's "
                           f"conditioning {video.tokens}: remove the partial artifact to start again")
        state, start = TokenState(v, patchify_audio(snap["audio"])), writer.progress.step
        ctx.progress.emit("resumed", step=start, total=total)
    else:
        seed, name = int(p.seed), ctx.stage.name
        nv = gaussian_noise(noise_key(seed, name, "video"), tuple(video.latent.shape))
        na = gaussian_noise(noise_key(seed, name, "audio"), tuple(audio.latent.shape))
        state = TokenState(cond_items.noised(video, nv, noise_scale).latent,
                           cond_items.noised(audio, na, 0.0 if audio.frozen else noise_scale).latent)
        start = 0
    mode = weights_mode(ctx)
    ctx.progress.emit("loading", what="transformer", weights_mode=mode.params())
    model = load_transformer_mode(ctx.weights["checkpoint"], mode, loras=stage_loras(ctx), dtype=compute_of(ctx))
    cond = text_conditioning(ctx.inputs["text"], guidance, audio_guided=not audio.frozen).with_states(video, audio)
    # test hook: slow each step down so a test can kill the process mid-run (not part of any key)
    delay = float(os.environ.get("LTX2_TEST_STEP_DELAY", "0") or 0)

    def on_step(k: int, st: TokenState) -> None:
        arrays = {"video": unpatchify_video(video.target(st.video), f, h, w),
                  "audio": unpatchify_audio(st.audio, layout.audio_channels, layout.audio_mel_bins)}
        if video.tokens > video.target_tokens:
            arrays["video_appended"] = st.video[:, video.target_tokens:]
        writer.checkpoint(k, arrays=arrays, facts={"sigma": float(sigmas[k]), "step": k, "total_steps": total})
        ctx.progress.step(k, total, sigma=float(sigmas[k]))
        if delay:
            time.sleep(delay)

    ctx.progress.step(start, total, sigma=float(sigmas[start]))
    Sampler(model, cond, guidance, passes_per_call=passes_per_call(mode), sampler=sampler,
            noise=step_noise(int(p.seed), ctx.stage.name)).run(state, sigmas, start, on_step)
    if mode.streaming:
        emit_stream_stats(ctx, model.stats, total - start)
    writer.finalize(facts={"frame_count": int(p.frames), "height": int(p.height), "width": int(p.width),
                           "fps": float(p.fps), "sigma": float(sigmas[-1]), "step": total, "total_steps": total})


def stage_loras(ctx) -> list[tuple]:
    """(path, strength) of every LoRA fused into the stage's transformer: the user LoRAs (roles lora.1 ..
    lora.N, strengths from the ``loras`` parameter), then the distilled LoRA when ``distilled_lora`` asks."""
    strengths = ctx.params.loras
    roles = sorted((r for r in ctx.weights if r.startswith("lora.")), key=lambda r: (len(r), r))
    want = [f"lora.{i + 1}" for i in range(len(strengths))]
    if roles != want:
        raise BadInput(f"{ctx.stage.name}: loras={strengths} needs the weight roles {want or 'none'}, got "
                       f"{roles or 'none'}; give one --weights lora.N=FILE per strength")
    out = [(ctx.weights[r], s) for r, s in zip(roles, strengths)]
    lora = getattr(ctx.params, "distilled_lora", None)
    if lora is not None:
        if "distilled_lora" not in ctx.weights:
            raise BadInput(f"{ctx.stage.name}: distilled_lora is set but no distilled LoRA file was given "
                           "(--weights distilled_lora=...)")
        out.append((ctx.weights["distilled_lora"], float(lora.strength)))
    return out


def emit_stream_stats(ctx, stats, steps: int) -> None:
    """What streaming the weights cost, for the run manifest (and `ltx2 plan`'s measured figure)."""
    ctx.progress.emit("streaming", load_s=round(stats.load_s, 3), passes=stats.passes, blocks=stats.blocks,
                      bytes_read=stats.bytes_read, steps=steps,
                      s_per_step=round(stats.load_s / steps, 3) if steps else None)


def passes_per_call(mode) -> int | None:
    """Guided passes per transformer call: all stacked when streaming (the blocks are read once per step,
    not once per pass), one at a time when resident (the same work, a quarter of the activations)."""
    return None if mode.streaming else 1


ACTIVATION_FLOATS = 12  # per token and stream width, fitted (see sampling_memory)
LTX23_ADALN_ROWS = 3  # LTX-2.3's cross-attention AdaLN: 9 rows per token, not 6 (computed and measured)


def appended_tokens(ctx) -> tuple[int, bool]:
    """(video tokens the conditioning inputs append, whether an attention mask comes with them), from their shapes
    (the planner's predictions or the artifacts)."""
    n, masked = 0, False
    for item, art in zip(getattr(ctx.params, "conditioning", []), ctx.inputs.get("conditioning", [])):
        if item.use in ("keyframe", "reference"):
            _, _, f, h, w = art.shape("video")
            n += f * h * w
            masked |= item.use == "reference" and ("attention" in getattr(art, "shapes", getattr(art, "arrays", {}))
                                                   or item.attention_strength < 1.0)
    return n, masked


def sampling_memory(ctx, layout: LatentLayout, grid: tuple[int, int, int], audio_frames: int, passes: int):
    """Transformer weights held under the stage's WeightsMode, plus the activations of the passes that run
    together (``passes`` guided passes stacked when streaming, one pass when resident).

    Resident: all blocks; building them holds one block in float32 besides (when quantising or fusing a
    LoRA), before any activation exists. Streamed: one block, read (and possibly quantised / fused)
    while the token streams are alive, so the two add up.

    Activations, fitted to benchmarks/transformer_memory.py at the real widths (peak RSS above the
    weights, process included: 1 x 6144 tokens 2.54 GiB, 4 x 1536 tokens 2.61 GiB, 1 x 1536 tokens
    1.06 GiB): per pass, ~12 floats per token and stream width (residual streams, per-token AdaLN
    modulation, the 4x feed-forward, q/k/v) plus one query chunk's video self-attention scores (heads x
    chunk x tokens: on CPU each chunk is evaluated before the next, models/transformer/attention.py;
    Metal's fused kernel holds less), plus ~0.6 GiB of MLX / OpenBLAS working buffers.

    LTX-2.3's cross-attention AdaLN holds 9 AdaLN rows per token instead of 6 through the whole pass: 3 more
    floats per token and width, analytically, and as measured (benchmarks/transformer_memory.py, one real-width
    block, bf16, peak RSS above the weights: 2.0 1.03 / 2.55 GiB, 2.3 1.10 / 2.83 GiB at 1536 / 6144 tokens; the
    differences are 3.0 and 2.9 floats per token and width). The per-token A/V cross-attention scale/shift
    (v1.2.0, 4 rows) added nothing measurable to that peak (2.0 at 6144 tokens: 2.55 GiB, fitted 2.54 before it):
    it is not counted.

    Activations are counted at the stage's compute width (``compute``: bf16 / fp16 halve all but the runtime
    buffers); the IC-LoRA strengths stay float32 (as the artifact holds them) while their additive bias is at the
    compute width. Checked at the real widths (benchmarks/transformer_memory.py --compute bfloat16, one LTX-2 block,
    1536 + 126 tokens, CPU): 0.85 GiB above the weights measured, 0.83 estimated (float32: 1.04 measured, 1.07
    estimated); the weights, every float tensor at bf16, 1.36 GiB for the resident part and one block as held_bytes
    says."""
    ckpt = ctx.weights["checkpoint"]
    mode = weights_mode(ctx)
    held = transformer_held(ckpt, mode, compute_bytes(ctx))
    weights = held.total(mode.streaming)
    loras = [p for p, _ in stage_loras(ctx)]
    transient = (held.block_float32 if (mode.quantized or loras) else 0) + lora_block_bytes(loras, len(held.blocks))
    t = cached_header(ckpt).config().get("transformer", {})
    vdim = int(t.get("num_attention_heads", 32)) * int(t.get("attention_head_dim", 128))
    adim = int(t.get("audio_num_attention_heads", 32)) * int(t.get("audio_attention_head_dim", 64))
    heads = int(t.get("num_attention_heads", 32))
    extra, masked = appended_tokens(ctx)
    tokens = grid[0] * grid[1] * grid[2] + extra
    stacked = passes if passes_per_call(mode) is None else 1
    # the fit leaves 0.43-0.54 GiB at every size above the contract's baseline: working buffers
    runtime = 600 << 20
    floats = ACTIVATION_FLOATS + (LTX23_ADALN_ROWS if t.get("cross_attention_adaln") else 0)
    b = compute_bytes(ctx)
    per_pass = (tokens * vdim + audio_frames * adim) * floats * b
    scores = heads * min(tokens, DEFAULT_QUERY_CHUNK) * tokens * b
    # an IC-LoRA attention mask: the (tokens x tokens) strengths, and the additive bias the transformer makes of them
    mask = tokens * tokens * (COMPUTE_BYTES + b) if masked else 0
    acts = stacked * (per_pass + scores + mask) + runtime
    if mode.quantized:  # on CPU a quantised layer multiplies through its dequantised weight (at its scales' width:
        # the compute's), and MLX's buffer cache keeps a few (measured in float32: ~1 GiB more than bf16 at q4)
        acts += 4 * held.largest_matrix_f32 * b // COMPUTE_BYTES
    return MemoryPlan(weights, acts + transient if mode.streaming else max(acts, transient))
