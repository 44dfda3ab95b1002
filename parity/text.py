"""Parity checks for the text path: Gemma-3 hidden states and the LTX-2 / 2.3 embeddings processor."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx

from . import NETWORK_TOL, ParityResult, compare, load_fixture
from ltx2.models.text.embeddings import load_embeddings_processor
from ltx2.models.text.gemma import load_gemma


def check_gemma3(directory: Path, name: str) -> list[ParityResult]:
    z = load_fixture(directory, name)
    model = load_gemma(Path(directory) / f"{name}.safetensors", mx.float32)
    states = model(mx.array(z["input_ids"]), mx.array(z["attention_mask"]))
    n_ref = len([k for k in z if k.startswith("out_hidden_state_")])
    results = [compare(name, "num_hidden_states", len(states), n_ref, 0.0)]
    for i in range(n_ref):
        ref = z[f"out_hidden_state_{i}"]
        out = states[i] if i < len(states) else mx.zeros(ref.shape)
        results.append(compare(name, f"out_hidden_state_{i}", out, ref, NETWORK_TOL))
    return results


def check_connector(directory: Path, name: str) -> list[ParityResult]:
    z = load_fixture(directory, name)
    proc = load_embeddings_processor(Path(directory) / f"{name}.safetensors", mx.float32)
    n = len([k for k in z if k.startswith("hidden_state_")])
    states = [mx.array(z[f"hidden_state_{i}"]) for i in range(n)]
    mask = mx.array(z["attention_mask"])
    video_feats, audio_feats = proc.features(states, mask, "left")
    ctx = proc(states, mask, "left")
    results = [compare(name, "intermediate_video_features", video_feats, z["intermediate_video_features"],
                       NETWORK_TOL)]
    if "intermediate_audio_features" in z:  # LTX-2.3 (V2): a projection of its own
        results.append(compare(name, "intermediate_audio_features", audio_feats, z["intermediate_audio_features"],
                               NETWORK_TOL))
    return results + [
        compare(name, "out_video_encoding", ctx.video, z["out_video_encoding"], NETWORK_TOL),
        compare(name, "out_audio_encoding", ctx.audio, z["out_audio_encoding"], NETWORK_TOL),
        compare(name, "out_attention_mask", ctx.attention_mask, z["out_attention_mask"], 0.0),
    ]
