"""Audio VAE configuration, read from the checkpoint's own ``audio_vae`` config section.

The official file nests it as ``audio_vae.model.params.ddconfig`` (network shape) plus
``audio_vae.preprocessing`` (STFT / mel front-end). Defaults are the official configurator's, so a
config that leaves a key out builds the same network as the reference does.
"""

from __future__ import annotations

from dataclasses import dataclass

from ltx2.spec.errors import BadInputError

# Time (mel frames) per latent frame. The official code fixes this at 4 (not derived from ch_mult)
# when it computes the decoder's output length.
LATENT_DOWNSAMPLE_FACTOR = 4

CAUSALITY_AXES = ("none", "height", "width", "width-compatibility")


class AudioConfigError(BadInputError):
    """The checkpoint's audio config asks for something this implementation does not build."""


@dataclass(frozen=True)
class AudioVAEConfig:
    ch: int = 128
    out_ch: int = 2
    ch_mult: tuple[int, ...] = (1, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (8, 16, 32)
    resolution: int = 256
    z_channels: int = 8
    double_z: bool = True
    in_channels: int = 2
    causality_axis: str = "height"  # "none" | "height" | "width" | "width-compatibility"
    attn_type: str = "vanilla"  # "vanilla" | "none"
    mid_block_add_attention: bool = True
    mel_bins: int | None = 64
    # preprocessing (waveform -> log-mel) and timing
    sample_rate: int = 16000
    mel_hop_length: int = 160
    n_fft: int = 1024
    is_causal: bool = True

    @property
    def num_resolutions(self) -> int:
        return len(self.ch_mult)

    @classmethod
    def from_config(cls, config: dict) -> "AudioVAEConfig":
        """Build from the whole checkpoint config (with an ``audio_vae`` key) or from that section itself."""
        section = config.get("audio_vae", config)
        params = section.get("model", {}).get("params", {})
        dd = params.get("ddconfig", {})
        pre = section.get("preprocessing", {})
        stft = pre.get("stft", {})
        mel = pre.get("mel", {})
        variables = section.get("variables", {})

        norm_type = dd.get("norm_type", "pixel")
        if norm_type != "pixel":
            raise AudioConfigError(
                f"audio_vae ddconfig.norm_type={norm_type!r} is not supported: LTX-2 audio VAEs use 'pixel' "
                "(parameter-free RMS norm over channels)")
        axis = dd.get("causality_axis", "height")
        axis = "none" if axis is None else axis
        if axis not in CAUSALITY_AXES:
            raise AudioConfigError(f"audio_vae ddconfig.causality_axis={axis!r} is not one of {CAUSALITY_AXES}")
        attn_type = dd.get("attn_type", "vanilla")
        if attn_type not in ("vanilla", "none"):
            raise AudioConfigError(f"audio_vae ddconfig.attn_type={attn_type!r} is not supported "
                                   "(the official model implements only 'vanilla' and 'none')")
        if not dd.get("resamp_with_conv", True):
            raise AudioConfigError("audio_vae ddconfig.resamp_with_conv=False is not supported: the official "
                                   "encoder downsamples with a strided convolution (average pooling is never used "
                                   "by LTX-2 checkpoints)")
        # The official code finds the mel bin count in any of three places, in this order.
        mel_bins = dd.get("mel_bins") or mel.get("n_mel_channels") or variables.get("mel_bins")
        return cls(
            ch=int(dd.get("ch", 128)),
            out_ch=int(dd.get("out_ch", 2)),
            ch_mult=tuple(int(m) for m in dd.get("ch_mult", (1, 2, 4))),
            num_res_blocks=int(dd.get("num_res_blocks", 2)),
            attn_resolutions=tuple(int(r) for r in dd.get("attn_resolutions", (8, 16, 32))),
            resolution=int(dd.get("resolution", 256)),
            z_channels=int(dd.get("z_channels", 8)),
            double_z=bool(dd.get("double_z", True)),
            in_channels=int(dd.get("in_channels", 2)),
            causality_axis=axis,
            attn_type=attn_type,
            mid_block_add_attention=bool(dd.get("mid_block_add_attention", True)),
            mel_bins=int(mel_bins) if mel_bins else None,
            sample_rate=int(params.get("sampling_rate", 16000)),
            mel_hop_length=int(stft.get("hop_length", 160)),
            n_fft=int(stft.get("filter_length", 1024)),
            is_causal=bool(stft.get("causal", True)),
        )
