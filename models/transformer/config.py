"""Shape and behaviour of the LTX-2 / LTX-2.3 audio-video transformer, read from the checkpoint's own config.

The official single-file checkpoint carries ``__metadata__["config"]["transformer"]``; the tiny
test checkpoints carry the same keys with small sizes, so one code path serves both. The model
version is read from the config's switches (LTX-2.3: ``apply_gated_attention``,
``cross_attention_adaln``, ``caption_proj_before_connector``), never from a name. Options this port
does not implement are refused by name instead of being silently ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ltx2.spec.errors import BadInputError

# Options whose value is fixed in every LTX-2 release; the official configurator refuses any other
# value (including a missing key), and so do we.
FIXED_OPTIONS: dict[str, Any] = {
    "dropout": 0.0,
    "attention_bias": True,
    "num_vector_embeds": None,
    "activation_fn": "gelu-approximate",
    "num_embeds_ada_norm": 1000,
    "use_linear_projection": False,
    "only_cross_attention": False,
    "cross_attention_norm": True,
    "double_self_attention": False,
    "upcast_attention": False,
    "standardization_norm": "rms_norm",
    "norm_elementwise_affine": False,
    "qk_norm": "rms_norm",
    "positional_embedding_type": "rope",
    "use_audio_video_cross_attention": True,
    "share_ff": False,
    "av_cross_ada_norm": True,
    "use_middle_indices_grid": True,
}

# Options of later releases (LTX-2.5: a static prompt K/V table without the prompt AdaLN, feed-forwards
# without biases, a learned keyframe embedding) whose math this port does not implement: key -> the
# value every LTX-2 / 2.3 checkpoint has (absent means that value too).
UNIMPLEMENTED_OPTIONS: dict[str, Any] = {
    "use_prompt_adaln_single": True,
    "ff_bias": True,
    "audio_ff_bias": True,
    "use_keyframes_abs_pos_embedding": False,
}

# Every backend the official code can pick computes the same softmax attention.
ATTENTION_TYPES = ("default", "pytorch", "xformers", "flash_attention_3")


class TransformerConfigError(BadInputError):
    """The checkpoint's transformer config asks for something this port does not implement."""


@dataclass(frozen=True)
class BlockConfig:
    """What one audio-video transformer block is built from: both streams' sizes and the model-version
    switches of the block. The resident, streamed and converted paths all build blocks from this.

    LTX-2 (19B) is the defaults: no attention gates, no AdaLN on the text cross-attention, biases on the
    feed-forward Linears. LTX-2.3 (22B) turns on ``gated_attention`` and ``cross_attention_adaln``."""

    video_dim: int
    video_heads: int
    video_head_dim: int
    audio_dim: int
    audio_heads: int
    audio_head_dim: int
    eps: float = 1e-6
    gated_attention: bool = False  # LTX-2.3 apply_gated_attention: per-head gates on every attention
    cross_attention_adaln: bool = False  # LTX-2.3 cross_attention_adaln: AdaLN-modulated text cross-attention
    ff_bias: bool = True  # the feed-forward Linears carry biases (as in LTX-2 and 2.3)

    @property
    def adaln_params(self) -> int:
        """Rows of the per-block AdaLN table: shift/scale/gate of self-attention and feed-forward, plus
        shift/scale/gate of the text cross-attention's queries with cross-attention AdaLN."""
        return adaln_params(self.cross_attention_adaln)


def adaln_params(cross_attention_adaln: bool) -> int:
    return 9 if cross_attention_adaln else 6


@dataclass(frozen=True)
class TransformerConfig:
    num_layers: int = 48
    num_attention_heads: int = 32
    attention_head_dim: int = 128
    in_channels: int = 128
    out_channels: int = 128
    cross_attention_dim: int = 4096
    audio_num_attention_heads: int = 32
    audio_attention_head_dim: int = 64
    audio_in_channels: int = 128
    audio_out_channels: int = 128
    audio_cross_attention_dim: int = 2048
    caption_channels: int = 3840
    norm_eps: float = 1e-6
    positional_embedding_theta: float = 10000.0
    positional_embedding_max_pos: tuple[int, ...] = (20, 2048, 2048)
    audio_positional_embedding_max_pos: tuple[int, ...] = (20,)
    timestep_scale_multiplier: float = 1000
    # the official default is 1 when the key is missing; every LTX-2 checkpoint sets 1000
    av_ca_timestep_scale_multiplier: float = 1
    # block-level model-version switches (BlockConfig)
    gated_attention: bool = False
    cross_attention_adaln: bool = False
    ff_bias: bool = True
    # LTX-2 projects the text features (caption_channels wide) to each stream's width inside the
    # transformer; LTX-2.3 does it on the text side (caption_proj_before_connector), so its contexts
    # arrive at the stream widths
    caption_projection: bool = True
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    @property
    def audio_inner_dim(self) -> int:
        return self.audio_num_attention_heads * self.audio_attention_head_dim

    @property
    def prompt_adaln(self) -> bool:
        """Model-level AdaLN from sigma that modulates the text keys/values (LTX-2.3's prompt_adaln_single)."""
        return self.cross_attention_adaln

    @property
    def adaln_params(self) -> int:
        return adaln_params(self.cross_attention_adaln)

    @property
    def block(self) -> BlockConfig:
        """What each of the ``num_layers`` blocks is built from."""
        return BlockConfig(self.inner_dim, self.num_attention_heads, self.attention_head_dim, self.audio_inner_dim,
                           self.audio_num_attention_heads, self.audio_attention_head_dim, self.norm_eps,
                           gated_attention=self.gated_attention, cross_attention_adaln=self.cross_attention_adaln,
                           ff_bias=self.ff_bias)

    @property
    def cross_pe_max_pos(self) -> int:
        """Max position of the time axis shared by the audio<->video cross-attention RoPE."""
        return max(self.positional_embedding_max_pos[0], self.audio_positional_embedding_max_pos[0])

    @classmethod
    def from_config(cls, config: dict) -> "TransformerConfig":
        """Build from the checkpoint config: either the whole metadata dict or its "transformer" part."""
        cfg = config.get("transformer", config)
        if not isinstance(cfg, dict):
            raise TransformerConfigError(f"transformer config must be a JSON object, got {type(cfg).__name__}")

        later = [(k, cfg[k], v) for k, v in UNIMPLEMENTED_OPTIONS.items() if k in cfg and cfg[k] != v]
        if later:
            raise TransformerConfigError(
                "unsupported transformer config: "
                + "; ".join(f"{k}={got!r} (only {want!r} is implemented)" for k, got, want in later)
                + ". These are options of a later model version (LTX-2.5); LTX-2 and LTX-2.3 are implemented")

        bad = [(k, cfg.get(k), v) for k, v in FIXED_OPTIONS.items() if cfg.get(k) != v]
        if bad:
            raise TransformerConfigError(
                "unsupported transformer config: "
                + "; ".join(f"{k}={got!r} (only {want!r} is supported)" for k, got, want in bad))

        attention_type = cfg.get("attention_type", "default")
        if attention_type not in ATTENTION_TYPES:
            raise TransformerConfigError(f"unsupported transformer config: attention_type={attention_type!r} "
                                         f"(expected one of {ATTENTION_TYPES})")
        # The official default for a missing rope_type is "interleaved", which no LTX-2 release uses.
        rope_type = cfg.get("rope_type", "interleaved")
        if rope_type != "split":
            raise TransformerConfigError(f"unsupported transformer config: rope_type={rope_type!r} "
                                         "(only 'split', the LTX-2 layout, is implemented)")
        precision = cfg.get("frequencies_precision")
        if precision != "float64":
            raise TransformerConfigError(f"unsupported transformer config: frequencies_precision={precision!r} "
                                         "(only 'float64', the LTX-2 setting, is implemented)")

        d = cls.__dataclass_fields__
        switches = {"gated_attention": bool(cfg.get("apply_gated_attention", False)),
                    "cross_attention_adaln": bool(cfg.get("cross_attention_adaln", False)),
                    "caption_projection": not cfg.get("caption_proj_before_connector", False)}
        kw: dict[str, Any] = dict(switches)
        for name in d:
            if name in ("raw", "ff_bias") or name in switches or name not in cfg:
                continue
            v = cfg[name]
            kw[name] = tuple(v) if isinstance(v, list) else v
        if switches["caption_projection"] and "caption_channels" not in cfg:
            raise TransformerConfigError("transformer config has no caption_channels: the LTX-2 transformer "
                                         "holds the caption projection and needs its input width")
        out = cls(**kw, raw=dict(cfg))
        out._validate()
        return out

    def _validate(self) -> None:
        problems = []
        if len(self.positional_embedding_max_pos) != 3:
            problems.append(f"positional_embedding_max_pos={list(self.positional_embedding_max_pos)} "
                            "must have 3 entries (time, height, width)")
        if len(self.audio_positional_embedding_max_pos) != 1:
            problems.append(f"audio_positional_embedding_max_pos={list(self.audio_positional_embedding_max_pos)} "
                            "must have 1 entry (time)")
        # The text context is projected to the stream's width before cross-attention.
        if self.cross_attention_dim != self.inner_dim:
            problems.append(f"cross_attention_dim={self.cross_attention_dim} must equal the video width "
                            f"num_attention_heads*attention_head_dim={self.inner_dim}")
        if self.audio_cross_attention_dim != self.audio_inner_dim:
            problems.append(f"audio_cross_attention_dim={self.audio_cross_attention_dim} must equal the audio width "
                            f"audio_num_attention_heads*audio_attention_head_dim={self.audio_inner_dim}")
        # The audio<->video attention runs with the audio head layout on RoPE tables that each
        # stream builds with its own head count; the two only agree when the counts match.
        if self.num_attention_heads != self.audio_num_attention_heads:
            problems.append(f"num_attention_heads={self.num_attention_heads} must equal "
                            f"audio_num_attention_heads={self.audio_num_attention_heads}")
        # split RoPE rotates the two halves of each head against each other
        for name, head_dim in (("attention_head_dim", self.attention_head_dim),
                               ("audio_attention_head_dim", self.audio_attention_head_dim)):
            if head_dim % 2:
                problems.append(f"{name}={head_dim} must be even for split RoPE")
        if problems:
            raise TransformerConfigError("unsupported transformer config: " + "; ".join(problems))
