"""Parity of the half-precision compute paths (``compute: bfloat16 | float16``) with the official code run in them.

The ``*_half`` fixtures (tests/fixtures/make_half_fixtures.py) hold each network's official outputs three times,
from the same bf16-exact weights and inputs: computed in float32 (``f32_*``), with the module and inputs in
bfloat16 (``bf16_*``, as the official pipelines run) and in float16 (``fp16_*``). Each check runs our network with
``compute`` float32, bfloat16 and float16 and reports, per output:

- ``<output> in float32 vs official float32``: the float32 path, at the network tolerance (1e-4);
- ``<output> in <half> vs official <half>`` and ``<output> in <half> vs ours float32``: at ``HALF_TOL_FACTOR`` times
  d = ||official <half> - official float32|| / ||official float32||, what that dtype's arithmetic costs the
  official code on this very network and input.

Why that tolerance: our half path and the official one round the same weights and inputs, then each rounds its
own intermediates; were those roundings independent, ours would sit about d from the float32 result and
sqrt(2) d (1.41 d) from the official half result. Measured on the committed draw and a second one (seed offset 7),
across every network and both half dtypes: ours is 0.3-1.9 d from float32 and 0.4-1.8 d from the official half
output. 2.5 d leaves room for that spread while still failing a path that computes at the wrong width in the wrong
place: an activation dropped to a half dtype where the official code keeps float32 (a GroupNorm's statistics, the
RoPE angles), or a network that never leaves float32, moves an output by d or more on one of the two rows.

The two-stage pipeline is compared twice. The official pipelines keep their whole latent state, noise and guidance
arithmetic in the model dtype; ours keeps the state in float32 between steps and only the networks run at half
width. That official pipeline drifts far from its float32 run (13-21% after stage 1 in bf16, 9-15% in fp16 on this
tiny random model, where fp16's finer rounding barely helps: the state's rounding, amplified by guidance, dominates),
so ``vs official <half> pipeline`` is checked at 2.5 d of that drift and says little. The fixture therefore also runs
the official networks in the half dtype inside the official sampler with a float32 state (``<half>_f32state_*``:
ltx2's design, done with the official code): d of that is 0.3-2.6% in bf16 and 0.04-0.3% in fp16, and ours must
sit within 2.5 d of it, and of our own float32 chain (measured: 1.0-1.3 d and 0.3-1.2 d).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import mlx.core as mx
import numpy as np

from ltx2.models.audio_vae import load_audio_decoder, load_audio_encoder
from ltx2.models.text.embeddings import load_embeddings_processor
from ltx2.models.transformer import ModalityInput, Perturbation, load_transformer
from ltx2.models.upsampler import LatentStatistics, load_upsampler, upsample_latent
from ltx2.models.video_vae import SuppliedNoise, load_video_decoder, load_video_encoder
from ltx2.models.vocoder import load_vocoder

from . import NETWORK_TOL, PIPELINE_TOL, ParityResult, compare, load_fixture, rel_err
from .pipeline import PIPELINE_OUTPUTS, two_stage
from .video_vae import to_first, to_last

HALF_TOL_FACTOR = 2.5
# fixture tag -> (our compute name, MLX dtype)
PRECISIONS = {"f32": ("float32", mx.float32), "bf16": ("bfloat16", mx.bfloat16), "fp16": ("float16", mx.float16)}
HALF = ("bf16", "fp16")

Run = Callable[[str, mx.Dtype], dict[str, mx.array]]  # (fixture tag, compute dtype) -> output name -> array


def half_rows(name: str, z: dict[str, np.ndarray], run: Run, f32_tol: float = NETWORK_TOL,
              references: tuple[tuple[str, str], ...] = (("official {label}", "{tag}_"),)) -> list[ParityResult]:
    """Every output ``run`` gives, in each precision, against the official ones (see the module docstring);
    ``f32_tol``: the float32 rows' tolerance. ``references``: (row label, fixture key prefix) of the official half
    outputs to compare with, each at HALF_TOL_FACTOR times its own distance to the official float32 output; the
    first one's distance also sets the ``vs ours float32`` row's tolerance."""
    ours = {tag: {k: _np(v) for k, v in run(tag, dtype).items()} for tag, (_, dtype) in PRECISIONS.items()}
    rows: list[ParityResult] = []
    for out, f32 in ours["f32"].items():
        official_f32 = z[f"f32_{out}"]
        rows.append(compare(name, f"{out} in float32 vs official float32", f32, official_f32, f32_tol))
        for tag in HALF:
            label = PRECISIONS[tag][0]
            if f"{tag}_{out}" not in z:
                why = str(z.get(f"{tag}_unsupported", "no official output in the fixture"))
                rows.append(ParityResult(name, f"{out} in {label}", None, None, "not implemented", why))
                continue
            tols = []
            for what, prefix in references:
                ref = z[prefix.format(tag=tag) + out]
                tols.append(HALF_TOL_FACTOR * rel_err(ref, official_f32))
                rows.append(compare(name, f"{out} in {label} vs {what.format(label=label)}", ours[tag][out], ref,
                                    tols[-1]))
            rows.append(compare(name, f"{out} in {label} vs ours float32", ours[tag][out], f32, tols[0]))
    return rows


def _np(a: mx.array) -> np.ndarray:
    return np.array(a.astype(mx.float32))


def _weights(directory: Path, name: str) -> Path:
    return Path(directory) / f"{name}.safetensors"


# ------------------------------------------------------------------------------------------------ the networks
def check_transformer(directory: Path, name: str) -> list[ParityResult]:
    z = load_fixture(directory, name)

    def modality(prefix: str) -> ModalityInput:
        return ModalityInput(latent=mx.array(z[f"{prefix}_latent"]), sigma=mx.array(z[f"{prefix}_sigma"]),
                             timesteps=mx.array(z[f"{prefix}_timesteps"]), positions=z[f"{prefix}_positions"],
                             context=mx.array(z[f"{prefix}_context"]))

    video, audio = modality("video"), modality("audio")

    def run(tag: str, dtype: mx.Dtype) -> dict[str, mx.array]:
        model = load_transformer(_weights(directory, name), dtype)
        tables = model.positional_tables(video.positions, audio.positions)
        out = {}
        for label, pert in (("", None), ("_stg_block1", Perturbation.stg([1])),
                            ("_no_av_crossattn", Perturbation.isolate_modalities())):
            out[f"out_video_x0{label}"], out[f"out_audio_x0{label}"] = model.denoise(video, audio, pert, tables)
        return out

    return half_rows(name, z, run)


def check_video_vae(directory: Path, name: str) -> list[ParityResult]:
    z = load_fixture(directory, name)

    def run(tag: str, dtype: mx.Dtype) -> dict[str, mx.array]:
        enc = load_video_encoder(_weights(directory, name), dtype)
        dec = load_video_decoder(_weights(directory, name), dtype)
        noise = None
        if dec.needs_noise:  # what the official decoder drew in this precision, replayed
            keys = sorted((k for k in z if k.startswith(f"{tag}_decoder_noise_")),
                          key=lambda k: int(k.rsplit("_", 1)[1]))
            noise = SuppliedNoise([to_last(z[k]) if z[k].ndim == 5 else mx.array(z[k]) for k in keys])
        out = dec(to_last(z["decoder_in_latent"]), None, noise)
        if noise is not None and noise.remaining:
            raise RuntimeError(f"{noise.remaining} recorded noise arrays were not drawn by the decoder")
        return {"encoder_out_latent": mx.array(to_first(enc(to_last(z["encoder_in_video"])).astype(mx.float32))),
                "decoder_out_video": mx.array(to_first(out.astype(mx.float32)))}

    return half_rows(name, z, run)


def check_audio_vae(directory: Path, name: str) -> list[ParityResult]:
    z = load_fixture(directory, name)

    def run(tag: str, dtype: mx.Dtype) -> dict[str, mx.array]:
        enc = load_audio_encoder(_weights(directory, name), dtype)
        dec = load_audio_decoder(_weights(directory, name), dtype)
        return {"encoder_out_latent": enc(mx.array(z["encoder_in_spectrogram"])),
                "decoder_out_mel": dec(mx.array(z["decoder_in_latent"]))}

    return half_rows(name, z, run)


def check_vocoder(directory: Path, name: str) -> list[ParityResult]:
    z = load_fixture(directory, name)
    return half_rows(name, z, lambda tag, dtype: {
        "out_waveform": load_vocoder(_weights(directory, name), dtype)(mx.array(z["in_mel"]))})


def check_upsampler(directory: Path, name: str) -> list[ParityResult]:
    z = load_fixture(directory, name)
    lat = mx.array(z["in_latent"])
    stats = LatentStatistics(mean=mx.array(z["vae_mean_of_means"]), std=mx.array(z["vae_std_of_means"]))

    def run(tag: str, dtype: mx.Dtype) -> dict[str, mx.array]:
        model = load_upsampler(_weights(directory, name), dtype)
        return {"out_latent_raw": model(lat.transpose(0, 2, 3, 4, 1)).transpose(0, 4, 1, 2, 3),
                "out_upsample_video": upsample_latent(lat, model, stats)}

    return half_rows(name, z, run)


def check_connector(directory: Path, name: str) -> list[ParityResult]:
    z = load_fixture(directory, name)
    states = [mx.array(z[f"hidden_state_{i}"]) for i in range(sum(k.startswith("hidden_state_") for k in z))]
    mask = mx.array(z["attention_mask"])

    def run(tag: str, dtype: mx.Dtype) -> dict[str, mx.array]:
        ctx = load_embeddings_processor(_weights(directory, name), dtype)(states, mask, "left")
        return {"out_video_encoding": ctx.video, "out_audio_encoding": ctx.audio}

    return half_rows(name, z, run)


def check_pipeline(directory: Path, name: str) -> list[ParityResult]:
    """The two-stage tiny chain with the transformer and upsampler computing in each precision (the sampler's state
    stays float32, the noise is the float32 draw)."""
    z = load_fixture(directory, name)
    u = load_fixture(directory, "upsampler_x2_half")
    stats = LatentStatistics(mean=mx.array(u["vae_mean_of_means"]), std=mx.array(u["vae_std_of_means"]))
    shaped = {**z, **{k: z[f"f32_{k}"] for k in PIPELINE_OUTPUTS}}  # two_stage reads the latents' shapes

    def run(tag: str, dtype: mx.Dtype) -> dict[str, mx.array]:
        model = load_transformer(_weights(directory, "transformer_ltx2_half"), dtype)
        upsampler = load_upsampler(_weights(directory, "upsampler_x2_half"), dtype)
        return two_stage(shaped, model, upsampler, stats, lambda k: z[f"f32_{k}"])

    # the float32 chain accumulates its float32 differences over six sampled steps: the pipeline tolerance there.
    # First reference: the official networks in the half dtype inside a float32 sampler, as ours run (float32 noise);
    # then the official pipeline all in the half dtype (its state rounded every step: far from float32, see README)
    return half_rows(name, z, run, PIPELINE_TOL,
                     (("official {label} networks, float32 state", "{tag}_f32state_"),
                      ("official {label} pipeline", "{tag}_")))


__all__ = ["HALF_TOL_FACTOR", "PIPELINE_OUTPUTS", "half_rows"]
