"""Shape and behaviour of the LTX-2 video VAE, read from the checkpoint's ``config["vae"]``.

One code path serves the real checkpoints and the tiny test ones: LTX-2.0 (latent 128 channels, three
``compress_all`` up-blocks, decoder widths 1024 -> 128, timestep-conditioned) and LTX-2.3 (``compress_all``
x2 / x1, ``compress_time`` and ``compress_space`` up-blocks with their own channel multipliers, zero padding,
no timestep conditioning). Defaults are the official (v1.2.0) configurators' defaults, including their
quirks: the encoder pads space with zeros and the decoder with reflection unless ``spatial_padding_mode``
says otherwise (the encoder alone also reads ``encoder_spatial_padding_mode``), and the decoder is
timestep-conditioned unless the config says it is not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ltx2.spec.errors import BadInputError


class VAEConfigError(BadInputError):
    """The checkpoint's video VAE config asks for something this port does not implement."""


# Encoder block kinds -> (time, space) compression factor; "_res" variants add a space-to-depth
# shortcut, "_x_y" / "_res" variants change the width by their multiplier.
ENCODER_BLOCKS = {
    "res_x": (1, 1), "res_x_y": (1, 1),
    "compress_time": (2, 1), "compress_space": (1, 2), "compress_all": (2, 2), "compress_all_x_y": (2, 2),
    "compress_time_res": (2, 1), "compress_space_res": (1, 2), "compress_all_res": (2, 2),
}
# Decoder block kinds -> (time, space) upsampling factor.
DECODER_BLOCKS = {"res_x": (1, 1), "res_x_y": (1, 1), "compress_time": (2, 1), "compress_space": (1, 2),
                  "compress_all": (2, 2)}

# Keys the official configurators read.
_USED_KEYS = {"dims", "in_channels", "out_channels", "latent_channels", "spatial_padding_mode",
              "encoder_spatial_padding_mode", "encoder_blocks", "decoder_blocks", "patch_size", "norm_layer",
              "latent_log_var", "causal_decoder", "timestep_conditioning", "decoder_base_channels"}
# Keys real checkpoints carry that the official code ignores; harmless only with these values
# (None: any value). Other values would change the model in ways the official code does not apply.
_IGNORED_KEYS: dict[str, Any] = {
    "_class_name": None, "encoder_base_channels": None,
    "decoder_spatial_padding_mode": None,  # the official decoder reads only spatial_padding_mode
    "scaling_factor": 1.0, "use_quant_conv": False, "normalize_latent_channels": False,
}
_PAD_MODES = ("zeros", "reflect", "replicate")
_LOG_VAR = ("uniform", "per_channel", "constant")


def _decoder_multiplier(name: str, params: dict) -> int:
    """How many times narrower a decoder block's output is than its input (res_x keeps its width)."""
    return 1 if name == "res_x" else int(params.get("multiplier", 2 if name == "res_x_y" else 1))


def _blocks(raw: Any, known: dict, side: str) -> tuple[tuple[str, dict], ...]:
    out = []
    for i, item in enumerate(raw or []):
        name, params = item
        if name not in known:
            raise VAEConfigError(
                f"vae.{side}_blocks[{i}] = {name!r}: block kind not supported (supported: {sorted(known)})")
        params = {"num_layers": params} if isinstance(params, int) else dict(params)
        if params.get("attention_head_dim") is not None:
            raise VAEConfigError(f"vae.{side}_blocks[{i}]: attention blocks are not supported")
        mult = params.get("multiplier", 1)
        if not isinstance(mult, int) or isinstance(mult, bool) or mult < 1:
            raise VAEConfigError(f"vae.{side}_blocks[{i}] ({name}): multiplier {mult!r} is not a positive integer")
        if side == "decoder" and params.get("residual") and name == "compress_all" and 8 % mult:
            # the shortcut repeats the depth-to-spaced input 8 / multiplier times over channels
            raise VAEConfigError(f"vae.decoder_blocks[{i}] (compress_all, residual): multiplier {mult} does not "
                                 "divide 8")
        out.append((name, params))
    return tuple(out)


@dataclass(frozen=True)
class VideoVAEConfig:
    in_channels: int = 3
    out_channels: int = 3
    latent_channels: int = 128
    patch_size: int = 4
    encoder_blocks: tuple = ()
    decoder_blocks: tuple = ()
    latent_log_var: str = "uniform"
    encoder_padding: str = "zeros"
    decoder_padding: str = "reflect"
    causal_decoder: bool = False
    timestep_conditioning: bool = True
    decoder_base_channels: int = 128

    @classmethod
    def from_config(cls, config: dict) -> VideoVAEConfig:
        """Build from the checkpoint config (the whole dict, or just its ``"vae"`` section)."""
        vae = config.get("vae", config) if isinstance(config, dict) else config
        unknown = sorted(set(vae) - _USED_KEYS - set(_IGNORED_KEYS))
        if unknown:
            raise VAEConfigError(f"vae config option(s) {unknown} are not known to this port "
                                         f"(values {[vae[k] for k in unknown]})")
        for k, ok in _IGNORED_KEYS.items():
            if ok is not None and k in vae and vae[k] != ok:
                raise VAEConfigError(f"vae.{k} = {vae[k]!r} is not supported (only {ok!r})")
        dims = vae.get("dims", 3)
        if dims != 3:
            raise VAEConfigError(f"vae.dims = {dims!r} is not supported (only 3-D convolutions)")
        norm = vae.get("norm_layer", "pixel_norm")
        if norm != "pixel_norm":
            raise VAEConfigError(f"vae.norm_layer = {norm!r} is not supported (only 'pixel_norm')")
        log_var = vae.get("latent_log_var", "uniform")
        if log_var not in _LOG_VAR:
            raise VAEConfigError(f"vae.latent_log_var = {log_var!r} is not supported (one of {_LOG_VAR})")
        for key in ("spatial_padding_mode", "encoder_spatial_padding_mode"):
            if vae.get(key) is not None and vae[key] not in _PAD_MODES:
                raise VAEConfigError(f"vae.{key} = {vae[key]!r} is not supported (one of {_PAD_MODES})")
        pad = vae.get("spatial_padding_mode")
        cfg = cls(
            in_channels=int(vae.get("in_channels", 3)),
            out_channels=int(vae.get("out_channels", 3)),
            latent_channels=int(vae.get("latent_channels", 128)),
            patch_size=int(vae.get("patch_size", 4)),
            encoder_blocks=_blocks(vae.get("encoder_blocks"), ENCODER_BLOCKS, "encoder"),
            decoder_blocks=_blocks(vae.get("decoder_blocks"), DECODER_BLOCKS, "decoder"),
            latent_log_var=log_var,
            encoder_padding=pad or vae.get("encoder_spatial_padding_mode") or "zeros",
            decoder_padding=pad or "reflect",
            causal_decoder=bool(vae.get("causal_decoder", False)),
            timestep_conditioning=bool(vae.get("timestep_conditioning", True)),
            decoder_base_channels=int(vae.get("decoder_base_channels", 128)),
        )
        cfg.decoder_stages()  # validate widths now, not at first use
        return cfg

    # -- derived facts ---------------------------------------------------------------------------
    @property
    def decoder_width(self) -> int:
        """Width after the decoder's conv_in: the base width times every up-block's channel divisor, so that the
        last block ends at the base width (the v1.2.0 rule; 1.0.0 fixed it at 8x the base, which is the same
        product for every released VAE, 2.0's 2*2*2 and 2.3's 2*1*2*2)."""
        return self.decoder_base_channels * math.prod(_decoder_multiplier(n, p) for n, p in self.decoder_blocks)

    def decoder_stages(self) -> list[tuple[str, dict, int, int]]:
        """(kind, params, width in, width out) per decoder block, in execution order (latent side first)."""
        width, out = self.decoder_width, []
        for name, p in reversed(self.decoder_blocks):
            new = width // _decoder_multiplier(name, p)  # exact: decoder_width is the product of the divisors
            if p.get("inject_noise") and name == "res_x_y" and new != width:
                raise VAEConfigError("vae.decoder_blocks: res_x_y with inject_noise changes the width, "
                                             "which the official noise scales cannot broadcast over")
            out.append((name, p, width, new))
            width = new
        return out

    def encoder_stages(self) -> list[tuple[str, dict, int, int]]:
        """(kind, params, width in, width out) per encoder block, in execution order (pixel side first)."""
        width, out = self.latent_channels, []
        for name, p in self.encoder_blocks:
            if name in ("res_x_y", "compress_all_x_y", "compress_time_res", "compress_space_res", "compress_all_res"):
                new = width * p.get("multiplier", 2)
            else:
                new = width
            if name.endswith("_res"):
                t, s = ENCODER_BLOCKS[name]
                if new % (t * s * s) or (width * t * s * s) % new:
                    raise VAEConfigError(f"vae.encoder_blocks: {name} multiplier {p.get('multiplier', 2)} "
                                                 f"does not fit width {width}")
            out.append((name, p, width, new))
            width = new
        return out

    @property
    def time_scale(self) -> int:
        """Video frames per latent frame step the decoder makes (8 for LTX-2)."""
        return math.prod(DECODER_BLOCKS[n][0] for n, _ in self.decoder_blocks)

    @property
    def space_scale(self) -> int:
        """Pixels per latent pixel the decoder makes (32 for LTX-2)."""
        return self.patch_size * math.prod(DECODER_BLOCKS[n][1] for n, _ in self.decoder_blocks)

    @property
    def encoder_scales(self) -> tuple[int, int]:
        """(frames, pixels) per latent step the encoder compresses (8, 32 for LTX-2)."""
        return (math.prod(ENCODER_BLOCKS[n][0] for n, _ in self.encoder_blocks),
                self.patch_size * math.prod(ENCODER_BLOCKS[n][1] for n, _ in self.encoder_blocks))

    def video_shape(self, latent_fhw: tuple[int, int, int]) -> tuple[int, int, int]:
        """(frames, height, width) the decoder makes from a latent of (frames, height, width)."""
        f, h, w = latent_fhw
        return (f - 1) * self.time_scale + 1, h * self.space_scale, w * self.space_scale
