"""Vocoder configuration, read from the checkpoint's own ``vocoder`` config section.

LTX-2 (19B) ships a flat HiFi-GAN config (resblock "1"). The BigVGAN-v2 generator (resblock
"AMP1", Snake/SnakeBeta behind anti-aliased activations) is built from the same flat shape.
LTX-2.3 nests two generators as ``{"vocoder": {...}, "bwe": {...}}`` (bandwidth extension to
48 kHz): that model is refused here with a message saying so.
"""

from __future__ import annotations

from dataclasses import dataclass

from ltx2.spec.errors import BadInputError


class VocoderConfigError(BadInputError):
    """The checkpoint's vocoder config asks for something this implementation does not build."""


@dataclass(frozen=True)
class VocoderConfig:
    resblock: str = "1"  # "1": HiFi-GAN ResBlock1 + leaky ReLU; "AMP1": BigVGAN v2 AMP blocks
    upsample_rates: tuple[int, ...] = (6, 5, 2, 2, 2)
    upsample_kernel_sizes: tuple[int, ...] = (16, 15, 8, 4, 4)
    upsample_initial_channel: int = 1024
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    activation: str = "snake"  # AMP1 only: "snake" | "snakebeta"
    use_tanh_at_final: bool = True  # else clamp to [-1, 1]
    use_bias_at_final: bool = True
    output_sampling_rate: int = 24000
    # Every official generator reads stereo mel as 2 x 64 = 128 input channels and writes 2 channels.
    mel_bins: int = 64
    in_channels: int = 128
    out_channels: int = 2

    @property
    def hop(self) -> int:
        """Output samples per mel frame."""
        n = 1
        for r in self.upsample_rates:
            n *= r
        return n

    @property
    def is_amp(self) -> bool:
        return self.resblock == "AMP1"

    @classmethod
    def from_config(cls, config: dict) -> "VocoderConfig":
        """Build from the whole checkpoint config (with a ``vocoder`` key) or from that section itself."""
        cfg = config["vocoder"] if isinstance(config.get("vocoder"), dict) else config
        if "bwe" in cfg or "bwe" in config:
            cfg = cfg if "bwe" in cfg else config
            raise VocoderConfigError(
                "vocoder config has a 'bwe' section: this is the LTX-2.3 bandwidth-extension vocoder "
                f"({cfg['bwe'].get('output_sampling_rate', '?')} Hz output), which is not supported yet; "
                "use an LTX-2 (19B) checkpoint, whose vocoder is the flat 24 kHz HiFi-GAN")
        resblock = str(cfg.get("resblock", "1"))
        if resblock not in ("1", "AMP1"):
            raise VocoderConfigError(f"vocoder resblock={resblock!r} is not supported: the official vocoder builds "
                                     "'1' (HiFi-GAN) or 'AMP1' (BigVGAN v2)")
        if cfg.get("stereo") is not True:
            raise VocoderConfigError(f"vocoder stereo={cfg.get('stereo')!r}: official LTX-2 vocoders are stereo "
                                     "and their config says stereo: true")
        activation = cfg.get("activation", "snake")
        if resblock == "AMP1" and activation not in ("snake", "snakebeta"):
            raise VocoderConfigError(f"vocoder activation={activation!r} is not supported for AMP1 "
                                     "(expected 'snake' or 'snakebeta')")
        rates = tuple(int(r) for r in cfg.get("upsample_rates", (6, 5, 2, 2, 2)))
        kernels = tuple(int(k) for k in cfg.get("upsample_kernel_sizes", (16, 15, 8, 4, 4)))
        if len(rates) != len(kernels):
            raise VocoderConfigError(f"vocoder upsample_rates {rates} and upsample_kernel_sizes {kernels} "
                                     "differ in length")
        rk = tuple(int(k) for k in cfg.get("resblock_kernel_sizes", (3, 7, 11)))
        rd = tuple(tuple(int(d) for d in ds) for ds in cfg.get("resblock_dilation_sizes", ((1, 3, 5),) * 3))
        if len(rk) != len(rd) or any(len(ds) != 3 for ds in rd):
            raise VocoderConfigError(f"vocoder resblock_kernel_sizes {rk} / resblock_dilation_sizes {rd}: one list "
                                     "of 3 dilations per kernel size is expected")
        return cls(
            resblock=resblock,
            upsample_rates=rates,
            upsample_kernel_sizes=kernels,
            upsample_initial_channel=int(cfg.get("upsample_initial_channel", 1024)),
            resblock_kernel_sizes=rk,
            resblock_dilation_sizes=rd,
            activation=activation,
            use_tanh_at_final=bool(cfg.get("use_tanh_at_final", True)),
            use_bias_at_final=bool(cfg.get("use_bias_at_final", True)),
            output_sampling_rate=int(cfg.get("output_sampling_rate", 24000)),
        )
