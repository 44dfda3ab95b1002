"""Parity of the real-weight formats: fp8 checkpoints and LoRA fusion, through ``load_transformer``.

Fixtures (made by tests/fixtures/make_fixtures.py through the official packages):

- ``transformer_fp8_cast``: the cast-only fp8 layout (E4M3 weights and biases, no scales) that the official
  fp8-cast policy holds after down-casting. Its official path upcasts each weight exactly (``weight.to(float32)``),
  so ours must equal it at the network tolerance.
- ``transformer_fp8_scaled``: the layout of the published fp8 files (E4M3 + weight_scale + input_scale).
  ``dequantised``: the official dequantisation (e4m3 * weight_scale) in the float model: equal at the network
  tolerance. ``official_scaled_mm``: the official fp8 matmul path, which also rounds every activation to E4M3
  with the static input scale (we keep activations in float): within :data:`FP8_TOL`.
- both: ``bf16`` is the unquantised checkpoint; the distance to it is the error fp8 weights cost, within FP8_TOL.
- ``transformer_lora``: two LoRAs with strengths. ``exact``: W + sum(s * B @ A) in float64: equal at the network
  tolerance. ``official``: the official fusion, which multiplies B @ A in bf16: within :data:`BF16_FUSION_TOL`.

These fixtures exist only in the ltx-core 1.0.0 sets, and their inputs condition the first video latent frame, so
every reference encodes 1.0.0's audio<->video AdaLN rule (scale/shift from the other stream's sigma), which this port
no longer follows (v1.2.0: each token's own timestep; see parity/transformer.py). Under the v1.2.0 rule the exact
references (``official_fp8_cast``, ``dequantised``, ``exact``, ``official``) move by 0.3-8%; only the loose fp8
bounds (``bf16``, ``official_scaled_mm`` at FP8_TOL) would still hold. Dropping them would leave the LoRA fixture
with nothing to compare and the fp8 ones with 6% bounds, so instead the rule's one input is replayed as 1.0.0 formed
it (``denoise_av_rule_1_0_0``, in the check only): these fixtures keep testing what they are about, the weight
formats, at their tolerances. The rule itself is checked on the v1.2.0 fixtures (transformer_ltx2/ltx23).
"""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx

from . import NETWORK_TOL, ParityResult, compare, load_fixture
from ltx2.models.transformer import load_transformer
from ltx2.models.weights import CheckpointError, read_header
from .transformer import _modality, denoise_av_rule_1_0_0

# E4M3 keeps 3 mantissa bits: rounding moves a value by at most 2^-4 of itself. Weights (or, on the official
# fp8 matmul path, activations) rounded so cannot move an output by more than about that share.
FP8_TOL = 2.0 ** -4
# The official fusion rounds s * B and then B @ A to bf16 (8 significant bits: at most 2^-9 each) before adding
# the delta to the weight, so the fused weights, and the outputs, may differ from an exact fusion by ~2^-8.
BF16_FUSION_TOL = 2.0 ** -8

# fixture -> (reference tag in the npz, tolerance), in display order
_REFERENCES = {
    "transformer_fp8_cast": (("official_fp8_cast", NETWORK_TOL), ("bf16", FP8_TOL)),
    "transformer_fp8_scaled": (("dequantised", NETWORK_TOL), ("official_scaled_mm", FP8_TOL), ("bf16", FP8_TOL)),
    "transformer_lora": (("exact", NETWORK_TOL), ("official", BF16_FUSION_TOL)),
}


def lora_files(directory: Path, name: str) -> list[Path]:
    """The fixture's LoRA files, in the order the official fusion took them."""
    return sorted(Path(directory).glob(f"{name}.lora_*.safetensors"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))


def _x0s(path: Path, z: dict, loras=()) -> dict[str, mx.array]:
    model = load_transformer(path, dtype=mx.float32, loras=loras)
    # the references were made with ltx-core 1.0.0's A/V AdaLN rule (see the module docstring)
    v, a = denoise_av_rule_1_0_0(model, _modality(z, "video"), _modality(z, "audio"))
    return {"video": v, "audio": a}


def _rows(name: str, z: dict, ours: dict[str, mx.array]) -> list[ParityResult]:
    return [compare(name, f"{tag}_{m}_x0", ours[m], z[f"{tag}_{m}_x0"], tol)
            for tag, tol in _REFERENCES[name] for m in ("video", "audio")]


def check_fp8(directory: Path, name: str) -> list[ParityResult]:
    path = Path(directory) / f"{name}.safetensors"
    header = read_header(path)
    if not any(t.dtype == "F8_E4M3" for t in header.tensors.values()):
        raise CheckpointError(f"{path}: holds no F8_E4M3 tensor: not an fp8 fixture")
    z = load_fixture(directory, name)
    return _rows(name, z, _x0s(path, z))


def check_lora(directory: Path, name: str) -> list[ParityResult]:
    z = load_fixture(directory, name)
    files = lora_files(directory, name)
    strengths = [float(s) for s in z["lora_strengths"]]
    if len(files) != len(strengths):
        raise CheckpointError(f"{name}: {len(files)} LoRA files beside the fixture but {len(strengths)} strengths")
    return _rows(name, z, _x0s(Path(directory) / f"{name}.safetensors", z, list(zip(files, strengths))))
