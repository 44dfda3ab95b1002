"""Parity of the sampling math (schedules, shapes, positions, guidance, the res_2s sampler) with the reference."""

from __future__ import annotations

import re
from pathlib import Path

import mlx.core as mx
import numpy as np

from ltx2.stages import sampling
from ltx2.stages.sampling import GuiderParams, blend_clean, guide, guided_x0, plan_passes
from ltx2.stages.sampling.res2s import res2s_schedule, res2s_step, standardized_noise

from . import SCHEDULE_TOL, ParityResult, compare, load_fixture


def _schedule_value(key: str):
    """Recompute one array of the schedules_positions fixture from its name (None: name not understood)."""
    if key == "distilled_sigmas":
        return sampling.distilled_sigmas(1)
    if key == "stage2_distilled_sigmas":
        return sampling.distilled_sigmas(2)
    m = re.fullmatch(r"ltx2_sigmas_steps(\d+)_(default_tokens|nostretch|latent(\d+)x(\d+)x(\d+))", key)
    if m:
        steps = int(m[1])
        if m[2] == "default_tokens":
            return sampling.ltx2_sigmas(steps)
        if m[2] == "nostretch":
            return sampling.ltx2_sigmas(steps, stretch=False)
        return sampling.ltx2_sigmas(steps, tokens=int(m[3]) * int(m[4]) * int(m[5]))
    m = re.fullmatch(r"video_positions_F(\d+)H(\d+)W(\d+)_fps(\d+)", key)
    if m:
        return np.array(sampling.video_positions(int(m[1]), int(m[2]), int(m[3]), fps=float(m[4])))
    m = re.fullmatch(r"audio_latent_shape_(\d+)f_fps(\d+)", key)
    if m:
        return np.array(sampling.audio_latent_shape(int(m[1]), float(m[2])).shape)
    m = re.fullmatch(r"audio_positions_T(\d+)", key)
    if m:
        return np.array(sampling.audio_positions(int(m[1])))
    return None


def check_schedules(directory: Path, name: str) -> list[ParityResult]:
    z = load_fixture(directory, name)
    results = []
    for key, ref in z.items():
        out = _schedule_value(key)
        if out is None:
            results.append(ParityResult(name, key, None, SCHEDULE_TOL, "FAIL",
                                        "array name not understood by the check"))
        else:
            results.append(compare(name, key, out, ref, SCHEDULE_TOL))
    return results


def _params(p: np.ndarray, blocks: np.ndarray | None = None):
    stg = () if blocks is None else (None if list(blocks) == [-1] else tuple(int(b) for b in blocks))
    return GuiderParams(cfg_scale=float(p[0]), stg_scale=float(p[1]), rescale_scale=float(p[2]),
                        modality_scale=float(p[3]), skip_step=int(p[4]) if len(p) > 4 else 0, stg_blocks=stg)


def _pass_id(p) -> str:
    def fmt(b):
        return "all" if b is None else (",".join(map(str, b)) or "none")

    return (f"neg={int(p.negative_context)}|v={fmt(p.stg_video_blocks)}|a={fmt(p.stg_audio_blocks)}"
            f"|iso={int(p.isolate_modalities)}|ven={int(p.video_enabled)}|aen={int(p.audio_enabled)}")


def check_guidance(directory: Path, name: str) -> list[ParityResult]:
    z = load_fixture(directory, name)
    results = []
    n_cases = len([k for k in z if re.fullmatch(r"case\d+_out", k)])
    for i in range(n_cases):
        g = lambda k: mx.array(z[f"case{i}_{k}"]) if f"case{i}_{k}" in z else None  # noqa: E731
        out = guide(_params(z[f"case{i}_params"]), g("cond"), g("uncond"), g("perturbed"), g("isolated"))
        results.append(compare(name, f"case{i}_out", np.array(out), z[f"case{i}_out"], SCHEDULE_TOL))

    # the stand-in transformer: a fixed x0 pair per distinct pass, stacked pass-major like a batched call
    table = {k: i for i, k in enumerate(z["pass_ids"].tolist())}
    tv, ta = mx.array(z["pass_video_x0"]), mx.array(z["pass_audio_x0"])

    def run(passes):
        idx = [table[_pass_id(p)] for p in passes]
        return mx.concatenate([tv[i] for i in idx], 0), mx.concatenate([ta[i] for i in idx], 0)

    n_plans = len({k.split("_")[0] for k in z if k.startswith("plan")})
    for j in range(n_plans):
        vp = _params(z[f"plan{j}_video_params"], z[f"plan{j}_video_stg_blocks"])
        ap = _params(z[f"plan{j}_audio_params"], z[f"plan{j}_audio_stg_blocks"])
        last = {None: None, 1: None}
        s = 0
        while f"plan{j}_step{s}_video" in z:
            want = z[f"plan{j}_step{s}_calls"].tolist()
            got = [_pass_id(p) for p in plan_passes(vp, ap, s)] or ["-"]
            results.append(ParityResult(name, f"plan{j}_step{s}_calls", None if got != want else 0.0, 0.0,
                                        "pass" if got == want else "FAIL",
                                        "" if got == want else f"passes {got} != reference {want}"))
            errs = {"video": [], "audio": []}
            for per_call in (None, 1):  # all passes in one batched call, and one pass per call
                try:
                    v, a = guided_x0(run, vp, ap, step=s, last=last[per_call], passes_per_call=per_call)
                except KeyError as e:  # a pass the reference never ran
                    for m in errs:
                        errs[m].append(ParityResult(name, f"plan{j}_step{s}_{m}", None, SCHEDULE_TOL, "FAIL",
                                                    f"a pass the reference never ran: {e}"))
                    break
                last[per_call] = (v, a)
                for m, x in (("video", v), ("audio", a)):
                    errs[m].append(compare(name, f"plan{j}_step{s}_{m}", np.array(x), z[f"plan{j}_step{s}_{m}"],
                                           SCHEDULE_TOL))
            for m in ("video", "audio"):
                bad = [r for r in errs[m] if r.status != "pass"]
                results.append(bad[0] if bad else max(errs[m], key=lambda r: r.rel_err))
            s += 1
    return results


# The res_2s sampler is checked on a toy denoiser, in float32 against the reference's float64 loop.
RES2S_TOL = 1e-5


def _res2s_case(z: dict, case: str) -> list[ParityResult]:
    name = "res2s"
    g = lambda k: z[f"{case}_{k}"]  # noqa: E731
    sigmas = res2s_schedule(g("sigmas").tolist())
    streams = ("video", "audio")
    w = [mx.array(g(f"{m}_w")) for m in streams]
    b = [mx.array(g(f"{m}_b")) for m in streams]
    masks = [mx.array(g(f"{m}_mask")) for m in streams]
    cleans = [mx.array(g(f"{m}_clean")) for m in streams]
    calls: list[tuple[float, tuple[mx.array, ...]]] = []

    def keep(i: int, x: mx.array) -> mx.array:
        return blend_clean(x, masks[i], cleans[i])

    def denoise(xs, sigma, _stage):
        calls.append((sigma, xs))
        return tuple(keep(i, mx.tanh(x @ w[i] + float(np.float32(sigma)) * b[i])) for i, x in enumerate(xs))

    draws = iter(range(10 ** 6))
    results: list[ParityResult] = []
    normalized_errs = []

    def noise(_stage, _i, shape):
        k = next(draws)
        raw = z[f"{case}_noise{k}_raw"]
        if tuple(raw.shape) != tuple(shape):
            raise ValueError(f"noise draw {k}: shape {shape}, the reference drew {raw.shape}")
        normalized_errs.append(compare(name, f"{case}_noise{k}", np.array(standardized_noise(mx.array(raw))),
                                       z[f"{case}_noise{k}_normalized"], RES2S_TOL))
        return mx.array(raw.astype(np.float32))

    xs = (mx.array(g("video_init")), mx.array(g("audio_init")))
    for i in range(len(sigmas) - 1):
        xs = res2s_step(xs, sigmas[i], sigmas[i + 1], denoise, noise, keep)
        mx.eval(*xs)
    n_ref = len(z[f"{case}_call_sigma"])
    if len(calls) != n_ref:
        return [ParityResult(name, f"{case}_calls", None, 0.0, "FAIL",
                             f"{len(calls)} denoiser calls, the reference made {n_ref}")]
    results.append(compare(name, f"{case}_call_sigmas", np.array([s for s, _ in calls]), z[f"{case}_call_sigma"],
                           SCHEDULE_TOL))
    for m, stream in enumerate(streams):
        # every denoiser input: the state entering each step and each midpoint, in order
        errs = [compare(name, f"{case}_call{k}_{stream}", np.array(x[m]), z[f"{case}_call{k}_{stream}"], RES2S_TOL)
                for k, (_, x) in enumerate(calls)]
        worst = max(errs, key=lambda r: (r.status != "pass", r.rel_err or 0.0))
        results.append(ParityResult(name, f"{case}_{stream}_states({len(errs)})", worst.rel_err, RES2S_TOL,
                                    worst.status, worst.output))
        results.append(compare(name, f"{case}_{stream}_out", np.array(xs[m]), g(f"{stream}_out"), RES2S_TOL))
    if normalized_errs:
        results.append(max(normalized_errs, key=lambda r: (r.status != "pass", r.rel_err or 0.0)))
    return results


def check_res2s(directory: Path, name: str) -> list[ParityResult]:
    """The res_2s loop (stages.sampling.res2s) on every case of the fixture: each denoiser input, the noise as
    normalised, the final states."""
    z = load_fixture(directory, name)
    cases = sorted({k[: -len("_sigmas")] for k in z if k.endswith("_sigmas") and not k.endswith("call_sigmas")})
    return [r for case in cases for r in _res2s_case(z, case)]
