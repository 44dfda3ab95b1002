"""Gemma hidden states -> text features -> video and audio contexts (the LTX-2 text path, 2.0 and 2.3).

Feature extractor V1 (LTX-2.0, 19B): every hidden state is normalised on its own over the valid
tokens of the prompt (mean removed, scaled by 8 / (max - min)), the states are concatenated per
token and one bias-free Linear maps ``hidden * num_states`` to ``hidden``. The same features feed
both connectors.

Feature extractor V2 (LTX-2.3, 22B): each token of each hidden state is RMS-normalised on its own
(padding zeroed), and two biased Linears map the concatenation straight to the video and the audio
widths, their input scaled by ``sqrt(width / hidden)`` so the output's scale does not depend on how
much wider the target is than Gemma. The checkpoint's config selects it (the four ``caption_proj*``
options, with the values of the only variant the official code builds).

Both concatenate channel-major: feature ``d * num_states + l`` is channel ``d`` of hidden state ``l``
(how the checkpoints' Linears were trained).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from ltx2.spec.errors import BadInputError
from ltx2.spec.layout import AUDIO_CONNECTOR, TEXT_PROJECTION, VIDEO_CONNECTOR

from ..weights import CheckpointError
from ..weights.keymap import KeyMap, Root
from ..weights.source import WeightSource, open_source
from . import connector as conn

FEATURES_PREFIX = TEXT_PROJECTION + "aggregate_embed."  # V1's projection; V2 has video_/audio_aggregate_embed.
VIDEO_CONNECTOR_PREFIX = VIDEO_CONNECTOR
AUDIO_CONNECTOR_PREFIX = AUDIO_CONNECTOR

# LTX-2.3 (22B) text-path options and the values of the one variant the official code builds (FeatureExtractorV2:
# per-token RMS norm, separate video/audio projections with bias, projection before the connector). None of them
# present: the LTX-2.0 path (V1).
V2_OPTIONS = {"caption_proj_before_connector": True, "caption_projection_first_linear": False,
              "caption_proj_input_norm": False, "caption_projection_second_linear": False}
EPS = 1e-6


class TextConfigError(BadInputError):
    """The checkpoint's text path is a variant this port does not implement."""


def uses_v2(tcfg: dict) -> bool:
    """Whether the checkpoint's ``transformer`` config selects feature extractor V2 (LTX-2.3); a partial or
    different set of the V2 options is refused, naming them, as the official configurator refuses it."""
    present = [k for k in V2_OPTIONS if k in tcfg]
    if not present:
        return False
    missing = [k for k in V2_OPTIONS if k not in tcfg]
    if missing:
        raise TextConfigError("checkpoint config has only some of the LTX-2.3 text-projection options: missing "
                              + ", ".join(missing))
    other = [f"{k}={tcfg[k]!r} (expected {v!r})" for k, v in V2_OPTIONS.items() if tcfg[k] != v]
    if other:
        raise TextConfigError("checkpoint config asks for a text projection variant the official code does not "
                              "build: " + ", ".join(other))
    return True


def context_widths(tcfg: dict) -> tuple[int, int]:
    """(video, audio) width of the text contexts the checkpoint's text path makes: its connectors' widths."""
    video = conn.ConnectorConfig.from_config(tcfg, "video", 1)
    audio = conn.ConnectorConfig.from_config(tcfg, "audio", 1)
    return video.inner_dim, audio.inner_dim


def normalize_hidden_states(hidden_states: list[mx.array], attention_mask: mx.array,
                            padding_side: str = "left") -> mx.array:
    """[B, T, D] x L -> [B, T, D * L], each state normalised over the prompt's valid tokens, padding zero.

    As the reference, the valid tokens are the last ``sum(mask)`` (left padding) or the first (right)."""
    x = mx.stack(hidden_states, axis=-1)  # [B, T, D, L]
    B, T, D, L = x.shape
    lengths = attention_mask.astype(mx.int32).sum(axis=-1)[:, None]  # [B, 1]
    t = mx.arange(T)[None]
    if padding_side == "left":
        valid = t >= T - lengths
    elif padding_side == "right":
        valid = t < lengths
    else:
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    v4 = valid[:, :, None, None]
    eps = 1e-6
    denom = (lengths.astype(x.dtype) * D)[:, :, None, None]  # [B,1,1,1]
    mean = mx.where(v4, x, 0.0).sum(axis=(1, 2), keepdims=True) / (denom + eps)
    lo = mx.where(v4, x, mx.inf).min(axis=(1, 2), keepdims=True)
    hi = mx.where(v4, x, -mx.inf).max(axis=(1, 2), keepdims=True)
    normed = 8 * (x - mean) / (hi - lo + eps)
    normed = normed.reshape(B, T, D * L)
    return mx.where(valid[..., None], normed, mx.zeros_like(normed))


class FeatureExtractorV1(nn.Module):
    def __init__(self, hidden_size: int, num_hidden_states: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.num_hidden_states = num_hidden_states
        self.aggregate_embed = nn.Linear(hidden_size * num_hidden_states, hidden_size, bias=False)

    def __call__(self, hidden_states: list[mx.array], attention_mask: mx.array, padding_side: str = "left") -> mx.array:
        _check_states(hidden_states, self.hidden_size, self.num_hidden_states)
        return self.aggregate_embed(normalize_hidden_states(hidden_states, attention_mask, padding_side))


def _check_states(hidden_states: list[mx.array], hidden_size: int, num_hidden_states: int) -> None:
    if len(hidden_states) != num_hidden_states or hidden_states[0].shape[-1] != hidden_size:
        raise ValueError(f"text features: the checkpoint's projection expects {num_hidden_states} hidden "
                         f"states of width {hidden_size}, got {len(hidden_states)} of width "
                         f"{hidden_states[0].shape[-1]}: is this the Gemma model the checkpoint was trained with?")


def rms_normalize_tokens(hidden_states: list[mx.array], attention_mask: mx.array) -> mx.array:
    """[B, T, D] x L -> [B, T, D * L]: each token of each state divided by its RMS over D, padding zero."""
    x = mx.stack(hidden_states, axis=-1)  # [B, T, D, L]
    B, T, D, L = x.shape
    normed = x * mx.rsqrt(mx.mean(mx.square(x), axis=2, keepdims=True) + EPS)
    normed = normed.reshape(B, T, D * L)
    return mx.where(attention_mask.astype(mx.bool_)[..., None], normed, mx.zeros_like(normed))


class FeatureExtractorV2(nn.Module):
    """LTX-2.3: per-token RMS norm, then one biased Linear per stream to its own width."""

    def __init__(self, hidden_size: int, num_hidden_states: int, video_width: int, audio_width: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.num_hidden_states = num_hidden_states
        flat = hidden_size * num_hidden_states
        self.video_aggregate_embed = nn.Linear(flat, video_width)
        self.audio_aggregate_embed = nn.Linear(flat, audio_width)

    def __call__(self, hidden_states: list[mx.array], attention_mask: mx.array,
                 padding_side: str = "left") -> tuple[mx.array, mx.array]:
        """(video features, audio features); the mask itself says which tokens are valid, whatever the side."""
        _check_states(hidden_states, self.hidden_size, self.num_hidden_states)
        normed = rms_normalize_tokens(hidden_states, attention_mask)
        out = []
        for proj in (self.video_aggregate_embed, self.audio_aggregate_embed):
            scale = math.sqrt(proj.weight.shape[0] / self.hidden_size)
            # W (s x) + b as s (W x + b) + (1 - s) b: the scale on the narrow output, not on a copy of the
            # (tokens x 188k) input
            out.append(proj(normed) * scale + proj.bias * (1 - scale))
        return out[0], out[1]


@dataclass(frozen=True)
class TextContext:
    video: mx.array  # [B, T, D_video], zero where the mask is 0
    audio: mx.array  # [B, T, D_audio]
    attention_mask: mx.array  # [B, T] binary


class EmbeddingsProcessor(nn.Module):
    """Feature extractor (V1, or V2 with ``v2``) + video connector + audio connector."""

    def __init__(self, hidden_size: int, num_hidden_states: int, video: conn.ConnectorConfig,
                 audio: conn.ConnectorConfig, *, v2: bool = False):
        super().__init__()
        self.v2 = v2
        self.feature_extractor = (FeatureExtractorV2(hidden_size, num_hidden_states, video.inner_dim, audio.inner_dim)
                                  if v2 else FeatureExtractorV1(hidden_size, num_hidden_states))
        self.video_connector = conn.EmbeddingsConnector(video)
        self.audio_connector = conn.EmbeddingsConnector(audio)

    @property
    def dtype(self) -> mx.Dtype:
        """The compute dtype: its weights' (see models/precision.py)."""
        return self.video_connector.learnable_registers.dtype

    def features(self, hidden_states: list[mx.array], attention_mask: mx.array,
                 padding_side: str = "left") -> tuple[mx.array, mx.array]:
        """(video features, audio features): one array twice under V1."""
        hidden_states = [h.astype(self.dtype) for h in hidden_states]  # normalised in it, as the official code
        feats = self.feature_extractor(hidden_states, attention_mask, padding_side)
        return feats if self.v2 else (feats, feats)

    def __call__(self, hidden_states: list[mx.array], attention_mask: mx.array,
                 padding_side: str = "left") -> TextContext:
        video_feats, audio_feats = self.features(hidden_states, attention_mask, padding_side)
        video, mask = self.video_connector(video_feats, attention_mask)
        video = video * mask[..., None].astype(video.dtype)
        audio, _ = self.audio_connector(audio_feats, attention_mask)
        return TextContext(video, audio, mask)


# checkpoint key -> EmbeddingsProcessor parameter name
TEXT_EMBEDDINGS_KEYMAP = KeyMap(
    network="text embeddings",
    # V1 aggregate_embed, V2 video_aggregate_embed / audio_aggregate_embed: their names are kept
    roots=(Root(TEXT_PROJECTION, "feature_extractor."),
           Root(VIDEO_CONNECTOR_PREFIX, "video_connector."),
           Root(AUDIO_CONNECTOR_PREFIX, "audio_connector.")),
    renames=conn.CONNECTOR_RENAMES,
    parts=("text_embeddings",),
)
_PROJECTION = "feature_extractor.aggregate_embed.weight"
_PROJECTIONS_V2 = {"video": "feature_extractor.video_aggregate_embed.weight",
                   "audio": "feature_extractor.audio_aggregate_embed.weight"}


def to_checkpoint(model: "EmbeddingsProcessor") -> dict[str, mx.array]:
    """The text projection and both connectors under their official single-file checkpoint keys."""
    return TEXT_EMBEDDINGS_KEYMAP.to_checkpoint(dict(tree_flatten(model.parameters())))


def _registers(source: WeightSource, connector: str, tcfg: dict) -> int:
    name = f"{connector}.learnable_registers"
    shape = source.shapes().get(name)
    if shape is None:
        raise CheckpointError(f"{source.path}: missing tensor {source.file_key(name)}")
    n = shape[0]
    declared = tcfg.get("connector_num_learnable_registers")
    if declared is not None and int(declared) != n:
        raise CheckpointError(f"{source.path}: config says connector_num_learnable_registers={declared} but "
                              f"{source.file_key(name)} has {n} rows")
    return n


def _shape(source: WeightSource, name: str, what: str) -> tuple[int, ...]:
    shape = source.shapes().get(name)
    if shape is None:
        raise CheckpointError(f"{source.path}: missing tensor {source.file_key(name)} ({what})")
    return shape


def embeddings_build(source: WeightSource) -> dict[str, int]:
    """The sizes the processor is built from that the config does not state, read from the tensors' shapes:
    the text features' width and hidden-state count (the projection) and each connector's register count.

    V1 maps ``hidden * states`` to ``hidden``, so its shape says both. V2 maps them to the video and audio
    widths: the hidden width is Gemma's, which the checkpoint states as ``caption_channels``."""
    tcfg = source.config().get("transformer", {})
    if uses_v2(tcfg):
        flats = {which: _shape(source, name, f"the LTX-2.3 {which} text projection")[1]
                 for which, name in _PROJECTIONS_V2.items()}
        flat = flats["video"]
        if flats["audio"] != flat:
            raise CheckpointError(f"{source.path}: the video and audio text projections take {flat} and "
                                  f"{flats['audio']} features")
        hidden = tcfg.get("caption_channels")
        if not isinstance(hidden, int) or hidden <= 0 or flat % hidden:
            raise CheckpointError(f"{source.path}: the text projections take {flat} features, not a multiple of "
                                  f"caption_channels={hidden!r} (Gemma's hidden width)")
        num_states = flat // hidden
    else:
        shape = _shape(source, _PROJECTION, "the LTX-2 text projection")
        hidden, flat = shape
        if flat % hidden:
            raise CheckpointError(f"{source.path}: {source.file_key(_PROJECTION)} shape {shape} is not "
                                  "(hidden, hidden * num_hidden_states)")
        num_states = flat // hidden
    return {"hidden": hidden, "num_hidden_states": num_states,
            "video_registers": _registers(source, "video_connector", tcfg),
            "audio_registers": _registers(source, "audio_connector", tcfg)}


def build_embeddings_processor(source: WeightSource) -> EmbeddingsProcessor:
    """The (unloaded) text projection and connectors the source describes: V1 (LTX-2.0) or V2 (LTX-2.3), as its
    config says."""
    tcfg = source.config().get("transformer", {})
    v2 = uses_v2(tcfg)
    build = embeddings_build(source)
    video = conn.ConnectorConfig.from_config(tcfg, "video", build["video_registers"])
    audio = conn.ConnectorConfig.from_config(tcfg, "audio", build["audio_registers"])
    if v2:  # the projections map to the transformer's widths, which the connectors must keep
        for name, c, heads, dim in (("video", video, "num_attention_heads", "attention_head_dim"),
                                    ("audio", audio, "audio_num_attention_heads", "audio_attention_head_dim")):
            width = tcfg.get(heads, 0) * tcfg.get(dim, 0)
            if c.inner_dim != width:
                raise TextConfigError(f"{name} connector width {c.num_attention_heads} x {c.attention_head_dim} = "
                                      f"{c.inner_dim} differs from the transformer's {name} width {heads} x {dim} "
                                      f"= {width}")
    else:
        for name, c in (("video", video), ("audio", audio)):
            if c.inner_dim != build["hidden"]:
                raise TextConfigError(f"{name} connector width {c.num_attention_heads} x {c.attention_head_dim} = "
                                      f"{c.inner_dim} differs from the text features' width {build['hidden']}")
    return EmbeddingsProcessor(build["hidden"], build["num_hidden_states"], video, audio, v2=v2)


def load_embeddings_processor(path: WeightSource | str | Path,
                              dtype: mx.Dtype | None = mx.float32) -> EmbeddingsProcessor:
    """The text projection and both connectors from the LTX-2 / 2.3 checkpoint (only their prefixes) or a
    converted text file."""
    source = open_source(path, TEXT_EMBEDDINGS_KEYMAP)
    return source.load_into(build_embeddings_processor(source), "text embeddings (projection + connectors)", dtype)
