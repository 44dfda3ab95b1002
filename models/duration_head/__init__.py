"""LTX-2.5's duration head (clip length from the text connectors' outputs)."""

from .loader import DURATION_HEAD_KEYMAP, load_duration_head
from .model import DurationHead, DurationHeadConfig, predicted_frames

__all__ = ["DURATION_HEAD_KEYMAP", "DurationHead", "DurationHeadConfig", "load_duration_head", "predicted_frames"]
