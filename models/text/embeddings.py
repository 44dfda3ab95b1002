"""Gemma hidden states -> text features -> video and audio contexts (the LTX-2 19B text path).

Feature extractor V1: every hidden state is normalised on its own over the valid tokens of the
prompt (mean removed, scaled by 8 / (max - min)), the states are concatenated per token and one
bias-free Linear maps ``hidden * num_states`` to ``hidden``. The same features feed both
connectors. The concatenation is channel-major: feature ``d * num_states + l`` is channel ``d`` of
hidden state ``l`` (how the checkpoint's Linear was trained).
"""

from __future__ import annotations

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

FEATURES_PREFIX = TEXT_PROJECTION + "aggregate_embed."
VIDEO_CONNECTOR_PREFIX = VIDEO_CONNECTOR
AUDIO_CONNECTOR_PREFIX = AUDIO_CONNECTOR

# LTX-2.3 (22B) text-path options (FeatureExtractorV2: per-token RMS norm, separate video/audio projections
# with bias, projection before the connector). Their presence in the config marks a 2.3 checkpoint.
LTX23_OPTIONS = ("caption_proj_before_connector", "caption_projection_first_linear", "caption_proj_input_norm",
                 "caption_projection_second_linear")


class TextConfigError(BadInputError):
    """The checkpoint's text path is a variant this port does not implement."""


def refuse_unsupported(tcfg: dict) -> None:
    found = [f"{k}={tcfg[k]!r}" for k in LTX23_OPTIONS if k in tcfg]
    if tcfg.get("connector_apply_gated_attention", False):
        found.append(f"connector_apply_gated_attention={tcfg['connector_apply_gated_attention']!r}")
    if found:
        raise TextConfigError("checkpoint config has LTX-2.3 text-encoder options " + ", ".join(found)
                              + " (FeatureExtractorV2 / gated connector attention); only the LTX-2 (19B) text path "
                              "(FeatureExtractorV1 + plain connectors) is implemented")


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
        if len(hidden_states) != self.num_hidden_states or hidden_states[0].shape[-1] != self.hidden_size:
            raise ValueError(f"text features: the checkpoint's projection expects {self.num_hidden_states} hidden "
                             f"states of width {self.hidden_size}, got {len(hidden_states)} of width "
                             f"{hidden_states[0].shape[-1]}: is this the Gemma model the checkpoint was trained with?")
        return self.aggregate_embed(normalize_hidden_states(hidden_states, attention_mask, padding_side))


@dataclass(frozen=True)
class TextContext:
    video: mx.array  # [B, T, D_video], zero where the mask is 0
    audio: mx.array  # [B, T, D_audio]
    attention_mask: mx.array  # [B, T] binary


class EmbeddingsProcessor(nn.Module):
    """Feature extractor + video connector + audio connector."""

    def __init__(self, hidden_size: int, num_hidden_states: int, video: conn.ConnectorConfig,
                 audio: conn.ConnectorConfig):
        super().__init__()
        self.feature_extractor = FeatureExtractorV1(hidden_size, num_hidden_states)
        self.video_connector = conn.EmbeddingsConnector(video)
        self.audio_connector = conn.EmbeddingsConnector(audio)

    def features(self, hidden_states: list[mx.array], attention_mask: mx.array, padding_side: str = "left") -> mx.array:
        return self.feature_extractor(hidden_states, attention_mask, padding_side)

    def __call__(self, hidden_states: list[mx.array], attention_mask: mx.array,
                 padding_side: str = "left") -> TextContext:
        feats = self.features(hidden_states, attention_mask, padding_side)
        video, mask = self.video_connector(feats, attention_mask)
        video = video * mask[..., None].astype(video.dtype)
        audio, _ = self.audio_connector(feats, attention_mask)
        return TextContext(video, audio, mask)


# checkpoint key -> EmbeddingsProcessor parameter name
TEXT_EMBEDDINGS_KEYMAP = KeyMap(
    network="text embeddings",
    roots=(Root(FEATURES_PREFIX, "feature_extractor.aggregate_embed."),
           Root(VIDEO_CONNECTOR_PREFIX, "video_connector."),
           Root(AUDIO_CONNECTOR_PREFIX, "audio_connector.")),
    renames=conn.CONNECTOR_RENAMES,
    parts=("text_embeddings",),
)
_PROJECTION = "feature_extractor.aggregate_embed.weight"


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


def embeddings_build(source: WeightSource) -> dict[str, int]:
    """The sizes the processor is built from that the config does not state, read from the tensors' shapes:
    the text features' width and hidden-state count (the projection) and each connector's register count."""
    shape = source.shapes().get(_PROJECTION)
    if shape is None:
        raise CheckpointError(f"{source.path}: missing tensor {source.file_key(_PROJECTION)} (the LTX-2 text "
                              "projection)")
    hidden, flat = shape
    if flat % hidden:
        raise CheckpointError(f"{source.path}: {source.file_key(_PROJECTION)} shape {shape} is not "
                              "(hidden, hidden * num_hidden_states)")
    tcfg = source.config().get("transformer", {})
    return {"hidden": hidden, "num_hidden_states": flat // hidden,
            "video_registers": _registers(source, "video_connector", tcfg),
            "audio_registers": _registers(source, "audio_connector", tcfg)}


def build_embeddings_processor(source: WeightSource) -> EmbeddingsProcessor:
    """The (unloaded) text projection and connectors the source describes (LTX-2.3 text paths refused)."""
    tcfg = source.config().get("transformer", {})
    refuse_unsupported(tcfg)
    build = embeddings_build(source)
    hidden = build["hidden"]
    video = conn.ConnectorConfig.from_config(tcfg, "video", build["video_registers"])
    audio = conn.ConnectorConfig.from_config(tcfg, "audio", build["audio_registers"])
    for name, c in (("video", video), ("audio", audio)):
        if c.inner_dim != hidden:
            raise TextConfigError(f"{name} connector width {c.num_attention_heads} x {c.attention_head_dim} = "
                                  f"{c.inner_dim} differs from the text features' width {hidden}")
    return EmbeddingsProcessor(hidden, build["num_hidden_states"], video, audio)


def load_embeddings_processor(path: WeightSource | str | Path,
                              dtype: mx.Dtype | None = mx.float32) -> EmbeddingsProcessor:
    """The text projection and both connectors from the LTX-2 checkpoint (only their prefixes) or a converted
    text file."""
    source = open_source(path, TEXT_EMBEDDINGS_KEYMAP)
    return source.load_into(build_embeddings_processor(source), "text embeddings (projection + connectors)", dtype)
