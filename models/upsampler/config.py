"""Latent upsampler configuration, read from the upsampler file's own ``__metadata__["config"]``.

The official files carry e.g. {"_class_name": "LatentUpsampler", "in_channels": 128, "mid_channels":
1024, "num_blocks_per_stage": 4, "dims": 3, "spatial_upsample": true, "temporal_upsample": false,
"spatial_scale": 2.0, "rational_resampler": false}; absent keys take the reference defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from ltx2.spec.errors import BadInputError

# up-by-num (pixel shuffle) then down-by-den (blurred stride) for each supported rational scale
RATIONAL_SCALES: dict[float, tuple[int, int]] = {0.75: (3, 4), 1.5: (3, 2), 2.0: (2, 1), 4.0: (4, 1)}
NORM_GROUPS = 32  # every GroupNorm in the network uses 32 groups


class UpsamplerConfigError(BadInputError):
    """The config asks for something this implementation (or the architecture) does not support."""


@dataclass(frozen=True)
class UpsamplerConfig:
    in_channels: int = 128
    mid_channels: int = 512
    num_blocks_per_stage: int = 4
    dims: int = 3
    spatial_upsample: bool = True
    temporal_upsample: bool = False
    spatial_scale: float = 2.0
    rational_resampler: bool = False

    @classmethod
    def from_config(cls, cfg: dict) -> "UpsamplerConfig":
        known = {f.name for f in fields(cls)}
        unknown = {k: v for k, v in cfg.items() if k not in known and not k.startswith("_")}
        if unknown:
            k, v = next(iter(unknown.items()))
            raise UpsamplerConfigError(f"latent upsampler config option {k}={v!r} is not supported "
                                       f"(known options: {', '.join(sorted(known))})")
        cls_name = cfg.get("_class_name")
        if cls_name is not None and cls_name != "LatentUpsampler":
            raise UpsamplerConfigError(f"_class_name={cls_name!r}: this file is not a LatentUpsampler")
        c = cls(**{k: v for k, v in cfg.items() if k in known})
        c.validate()
        return c

    @property
    def mode(self) -> str:
        """Which upsampling stage the network has: 'spatiotemporal', 'rational', 'spatial' or 'temporal'."""
        if self.spatial_upsample and self.temporal_upsample:
            return "spatiotemporal"
        if self.spatial_upsample:
            return "rational" if self.rational_resampler else "spatial"
        return "temporal"

    @property
    def rational(self) -> tuple[int, int]:
        """(up, down) factors of the rational resampler."""
        return RATIONAL_SCALES[float(self.spatial_scale)]

    def validate(self) -> None:
        def bad(option: str, value, why: str):
            raise UpsamplerConfigError(f"latent upsampler config option {option}={value!r} is not supported: {why}")

        for name in ("in_channels", "mid_channels"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                bad(name, v, "must be a positive integer")
        if not isinstance(self.num_blocks_per_stage, int) or self.num_blocks_per_stage < 0:
            bad("num_blocks_per_stage", self.num_blocks_per_stage, "must be a non-negative integer")
        if self.mid_channels % NORM_GROUPS:
            bad("mid_channels", self.mid_channels, f"GroupNorm uses {NORM_GROUPS} groups: it must be a multiple")
        if self.dims not in (2, 3):
            bad("dims", self.dims, "convolutions are 2-D (per frame) or 3-D")
        if not (self.spatial_upsample or self.temporal_upsample):
            bad("spatial_upsample", self.spatial_upsample,
                "with temporal_upsample also false there is nothing to upsample")
        if self.mode == "rational" and float(self.spatial_scale) not in RATIONAL_SCALES:
            bad("spatial_scale", self.spatial_scale, f"the rational resampler supports {sorted(RATIONAL_SCALES)}")
        if self.mode == "spatial" and float(self.spatial_scale) != 2.0:
            # the plain pixel-shuffle head is fixed at x2 (the reference silently ignores the scale)
            bad("spatial_scale", self.spatial_scale, "without rational_resampler the spatial upsampler is x2 only")
        if self.dims == 2 and self.mode != "spatial":
            # the reference's 2-D path only works with the plain x2 pixel-shuffle head
            bad("dims", self.dims, f"2-D convolutions work only with the plain x2 spatial head, not {self.mode}")
