"""Video VAE parity: encoder, decoder (with and without timestep conditioning), tiled decode, on the 1.0.0
fixtures (LTX-2.0 block layout) and the v1.2.0 ``video_vae_ltx23`` one (LTX-2.3 up-blocks with channel
multipliers; encoder and decoder only).

Fixture arrays are channels-first as the official code writes them; the MLX VAE is channels-last.

Noise. A timestep-conditioned decoder draws noise from a torch Generator (seeded 1234 for every
decode in the oracle script). The committed fixtures (tests/fixtures/make_fixtures.py) record
every tensor the official decoder drew, per output, as ``<output>_noise_<k>``; those are replayed
with ``SuppliedNoise``. Fixtures made by the stock oracle script record only the untiled draw
(``decoder_noise_randn``), so for the others we regenerate torch's CPU normal stream with
``TorchCPUNormal`` below: a test-only re-implementation of torch's documented-by-source CPU
algorithm (mt19937, 24-bit uniforms, Box-Muller in blocks of 16), checked against the recorded
draws by tests/test_video_vae.py. The network code never uses it.
"""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import numpy as np

from ltx2.models.video_vae import (SpatialTiling, SuppliedNoise, TemporalTiling, TilingConfig, decode_tiled_video,
                                   load_video_decoder, load_video_encoder)

from . import ParityResult, compare, load_fixture, oracle_version

ORACLE_SEED = 1234  # make_fixtures.run_video_vae seeds every decoder generator with it
DEFAULT_TILING = (64, 32, 16, 8)  # run_video_vae's TilingConfig(Spatial(64, 32), Temporal(16, 8))


def to_last(a: np.ndarray) -> mx.array:
    """(B, C, F, H, W) -> (B, F, H, W, C)."""
    return mx.array(np.moveaxis(np.asarray(a, np.float32), 1, -1))


def to_first(a: mx.array) -> np.ndarray:
    return np.moveaxis(np.array(a), -1, 1)


class TorchCPUNormal:
    """torch.randn(shape, generator=torch.Generator().manual_seed(seed)) on CPU, float32, as a NoiseSource.

    Consecutive draws continue one stream, as consecutive torch.randn calls on one generator do.
    Only the vectorised path (>= 16 values per draw) is reproduced; smaller draws are refused.
    """

    def __init__(self, seed: int):
        self._bits = np.random.MT19937()
        self._bits._legacy_seeding(seed)  # MT19937 init_genrand(seed), as torch seeds its CPU generator

    def _uniform(self, n: int) -> np.ndarray:
        raw = self._bits.random_raw(n).astype(np.uint64) & np.uint64((1 << 24) - 1)
        return raw.astype(np.float32) * np.float32(1.0 / (1 << 24))

    @staticmethod
    def _box_muller(u: np.ndarray) -> np.ndarray:
        radius = np.sqrt(np.float32(-2.0) * np.log(np.float32(1.0) - u[:8]))
        theta = np.float32(2.0 * np.pi) * u[8:]
        return np.concatenate([radius * np.cos(theta), radius * np.sin(theta)])

    def torch_randn(self, shape: tuple[int, ...]) -> np.ndarray:
        n = int(np.prod(shape))
        if n < 16:
            raise ValueError(f"torch draws of fewer than 16 values ({shape}) take another path; not reproduced")
        u = self._uniform(n)
        out = np.empty(n, np.float32)
        for i in range(0, n - 15, 16):
            out[i:i + 16] = self._box_muller(u[i:i + 16])
        if n % 16:  # torch redraws the last 16 values from fresh uniforms
            out[n - 16:] = self._box_muller(self._uniform(16))
        return out.reshape(shape)

    # NoiseSource: shapes arrive channels-last; torch draws channels-first.
    def draw(self, shape: tuple[int, ...]) -> mx.array:
        if len(shape) == 5:
            b, f, h, w, c = shape
            return mx.array(np.moveaxis(self.torch_randn((b, c, f, h, w)), 1, -1))
        return mx.array(self.torch_randn(tuple(shape)))

    def for_tile(self, index: int, count: int) -> TorchCPUNormal:
        return self  # the official tiled decode keeps drawing from one generator


def recorded_noise(z: dict[str, np.ndarray], output: str) -> list[np.ndarray] | None:
    keys = sorted((k for k in z if k.startswith(f"{output}_noise_")), key=lambda k: int(k.rsplit("_", 1)[1]))
    if not keys:
        return None
    return [z[k] for k in keys]


def noise_for(z: dict[str, np.ndarray], output: str, needs_noise: bool):
    """The noise the official decoder drew for ``output``: recorded if the fixture has it, else regenerated."""
    if not needs_noise:
        return None
    arrays = recorded_noise(z, output)
    if arrays is None and output == "decoder_out_video" and "decoder_noise_randn" in z:
        arrays = [z["decoder_noise_randn"]]
    if arrays is None:
        return TorchCPUNormal(ORACLE_SEED)
    return SuppliedNoise([to_last(a) if a.ndim == 5 else mx.array(a) for a in arrays])


def _all_used(noise) -> None:
    """Replayed noise must be used up: fewer draws than the official decoder made is a bug too."""
    if isinstance(noise, SuppliedNoise) and noise.remaining:
        raise RuntimeError(f"{noise.remaining} recorded noise arrays were not drawn by the decoder")


def fixture_tiling(z: dict[str, np.ndarray]) -> TilingConfig:
    sp, so, tp, to = (int(v) for v in z.get("tiled_config", DEFAULT_TILING))
    return TilingConfig(SpatialTiling(sp, so), TemporalTiling(tp, to))


def check_video_vae(directory: Path, name: str) -> list[ParityResult]:
    z = load_fixture(directory, name)
    weights = Path(directory) / f"{name}.safetensors"
    enc = load_video_encoder(weights)
    dec = load_video_decoder(weights)
    timestep = float(z["decoder_timestep"][0]) if "decoder_timestep" in z else None
    results = [compare(name, "encoder_out_latent", to_first(enc(to_last(z["encoder_in_video"]))),
                       z["encoder_out_latent"])]
    noise = noise_for(z, "decoder_out_video", dec.needs_noise)
    out = dec(to_last(z["decoder_in_latent"]), timestep, noise)
    _all_used(noise)
    results.append(compare(name, "decoder_out_video", to_first(out), z["decoder_out_video"]))
    if "tiled_in_latent" not in z and oracle_version(directory) == "1.2.0":
        return results  # the v1.2.0 video_vae_ltx23 fixture records no tiled decode (every 1.0.0 one does)
    latent = to_last(z["tiled_in_latent"])
    noise = noise_for(z, "tiled_out_video", dec.needs_noise)
    tiled = decode_tiled_video(dec, latent, fixture_tiling(z), timestep, noise)
    _all_used(noise)
    results.append(compare(name, "tiled_out_video", to_first(tiled), z["tiled_out_video"]))
    noise = noise_for(z, "tiled_untiled_reference", dec.needs_noise)
    untiled = dec(latent, timestep, noise)
    _all_used(noise)
    results.append(compare(name, "tiled_untiled_reference", to_first(untiled), z["tiled_untiled_reference"]))
    return results
