"""Vocoder configuration, read from the checkpoint's own ``vocoder`` config section.

LTX-2 (19B) ships a flat HiFi-GAN config (resblock "1"). The BigVGAN-v2 generator (resblock
"AMP1", Snake/SnakeBeta behind anti-aliased activations) is built from the same flat shape.
LTX-2.3 nests two generators as ``{"vocoder": {...}, "bwe": {...}}``: a BigVGAN at a low rate and
a bandwidth-extension (BWE) generator to the output rate (48 kHz), described by :class:`BweConfig`.
:func:`vocoder_config` reads either.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

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
    apply_final_activation: bool = True  # False: no tanh / clamp (the BWE generator, whose output is a residual)
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
        """Build from the whole checkpoint config (with a ``vocoder`` key) or from that section itself: a flat
        generator. A nested LTX-2.3 config is refused here; :func:`vocoder_config` reads both."""
        cfg = config["vocoder"] if isinstance(config.get("vocoder"), dict) else config
        if "bwe" in cfg or "bwe" in config:
            cfg = cfg if "bwe" in cfg else config
            raise VocoderConfigError(
                "vocoder config has a 'bwe' section: this is the LTX-2.3 bandwidth-extension vocoder "
                f"({cfg['bwe'].get('output_sampling_rate', '?')} Hz output), two generators, not one: read it with "
                "vocoder_config()")
        return _generator(cfg)


def _generator(cfg: dict, **override) -> VocoderConfig:
    """One flat generator section."""
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
    out = VocoderConfig(
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
    return replace(out, **override)


@dataclass(frozen=True)
class BweConfig:
    """LTX-2.3's vocoder: ``vocoder`` makes a waveform at ``input_sampling_rate`` from the stereo mel; its own
    causal log-mel (STFT ``n_fft`` / ``hop_length``, ``num_mels`` bins) feeds ``bwe``, whose output is a residual
    added to the waveform resampled to ``output_sampling_rate``."""

    vocoder: VocoderConfig
    bwe: VocoderConfig
    input_sampling_rate: int = 16000
    output_sampling_rate: int = 48000
    n_fft: int = 512
    hop_length: int = 80
    num_mels: int = 64

    @property
    def ratio(self) -> int:
        return self.output_sampling_rate // self.input_sampling_rate

    @property
    def generators(self) -> tuple[VocoderConfig, VocoderConfig]:
        return self.vocoder, self.bwe

    @classmethod
    def from_config(cls, config: dict) -> "BweConfig":
        """From the whole checkpoint config or its ``vocoder`` section, ``{"vocoder": {...}, "bwe": {...}}``."""
        cfg = _section(config)
        if not isinstance(cfg.get("bwe"), dict) or not isinstance(cfg.get("vocoder"), dict):
            raise VocoderConfigError("a bandwidth-extension vocoder config has a 'vocoder' and a 'bwe' section")
        low, bwe = cfg["vocoder"], cfg["bwe"]
        for name, section in (("vocoder", low), ("bwe", bwe)):  # the only variant the official code builds
            for key, want in (("resblock", "AMP1"), ("activation", "snakebeta")):
                if section.get(key) != want:
                    raise VocoderConfigError(f"vocoder.{name}.{key}={section.get(key)!r}: the bandwidth-extension "
                                             f"vocoder's generators are {key} {want!r}")
        try:
            rate_in, rate_out = int(bwe["input_sampling_rate"]), int(bwe["output_sampling_rate"])
            n_fft, hop, mels = int(bwe["n_fft"]), int(bwe["hop_length"]), int(bwe["num_mels"])
        except KeyError as e:
            raise VocoderConfigError(f"vocoder.bwe has no {e.args[0]!r}") from None
        if rate_in <= 0 or rate_out % rate_in:
            raise VocoderConfigError(f"vocoder.bwe resamples {rate_in} Hz to {rate_out} Hz: only whole ratios are "
                                     "built")
        # the low-rate generator's rate is the BWE input's, whatever its own section says (as the official build)
        out = cls(vocoder=_generator(low, output_sampling_rate=rate_in),
                  bwe=_generator(bwe, apply_final_activation=False, output_sampling_rate=rate_out),
                  input_sampling_rate=rate_in, output_sampling_rate=rate_out, n_fft=n_fft, hop_length=hop,
                  num_mels=mels)
        if 2 * mels != out.bwe.in_channels:
            raise VocoderConfigError(f"vocoder.bwe num_mels={mels}: its generator reads stereo "
                                     f"{out.bwe.in_channels // 2}-bin mel")
        if out.bwe.hop != hop * out.ratio:  # one mel frame of the low-rate signal -> its samples at the high rate
            raise VocoderConfigError(f"vocoder.bwe upsample_rates {out.bwe.upsample_rates} make {out.bwe.hop} "
                                     f"samples per mel frame; hop_length {hop} x {out.ratio} = {hop * out.ratio} "
                                     "is needed")
        if n_fft < hop:
            raise VocoderConfigError(f"vocoder.bwe n_fft={n_fft} is shorter than hop_length={hop}")
        return out


def vocoder_config(config: dict) -> VocoderConfig | BweConfig:
    """The checkpoint's vocoder (whole config or its ``vocoder`` section): one generator, or LTX-2.3's two."""
    cfg = _section(config)
    return BweConfig.from_config(cfg) if "bwe" in cfg else VocoderConfig.from_config(cfg)


def _section(config: dict) -> dict:
    """The ``vocoder`` section of a whole checkpoint config, or the section itself."""
    if "bwe" in config:
        return config
    return config["vocoder"] if isinstance(config.get("vocoder"), dict) else config
