"""The safetensors reader: header-only inspection, selective reads, dtypes, truncation, strict loading."""

from __future__ import annotations

import json
import struct

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from safetensors.numpy import save_file

from ltx2.models.weights import CheckpointError, load_prefix, load_strict, load_tensors, read_header


def _write(path, tensors, config=None):
    save_file(tensors, str(path), metadata={"config": json.dumps(config)} if config else None)
    return path


def test_header_config_and_prefix_read(tmp_path):
    p = _write(tmp_path / "m.safetensors", {"a.x": np.arange(6, dtype=np.float32).reshape(2, 3),
                                            "b.y": np.ones(4, np.float32)}, {"transformer": {"num_layers": 2}})
    h = read_header(p)
    assert h.config() == {"transformer": {"num_layers": 2}}
    assert h.tensors["a.x"].shape == (2, 3)
    w, _ = load_prefix(p, "a.")
    assert list(w) == ["x"]
    np.testing.assert_array_equal(np.array(w["x"]), np.arange(6).reshape(2, 3))


def test_prefix_read_touches_only_its_bytes(tmp_path):
    """Corrupting another component's bytes must not matter: they are never read."""
    p = _write(tmp_path / "m.safetensors", {"vae.w": np.full(1000, 7, np.float32), "dit.w": np.full(3, 2, np.float32)})
    h = read_header(p)
    info = h.tensors["vae.w"]
    with open(p, "r+b") as f:  # scribble NaNs over the vae tensor
        f.seek(info.begin)
        f.write(np.full(1000, np.nan, np.float32).tobytes())
    w, _ = load_prefix(p, "dit.")
    assert np.array(w["w"]).tolist() == [2, 2, 2]


def test_bf16_and_fp8_decoding(tmp_path):
    vals = np.array([1.0, -2.5, 0.15625], np.float32)
    bf16_bits = (vals.view(np.uint32) >> 16).astype(np.uint16)
    fp8 = np.array([0x38, 0xC0, 0x00], np.uint8)  # e4m3: 1.0, -2.0, 0.0
    p = tmp_path / "m.safetensors"
    # hand-built file: numpy has no bf16/fp8, so tag the raw bits in the header ourselves
    hdr = {"b": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 6]},
           "f": {"dtype": "F8_E4M3", "shape": [3], "data_offsets": [6, 9]}}
    js = json.dumps(hdr).encode()
    p.write_bytes(struct.pack("<Q", len(js)) + js + bf16_bits.tobytes() + fp8.tobytes())
    t = load_tensors(read_header(p), ["b", "f"], mx.float32)
    np.testing.assert_array_equal(np.array(t["b"]), vals)
    np.testing.assert_array_equal(np.array(t["f"]), [1.0, -2.0, 0.0])


def test_truncated_file_is_named(tmp_path):
    p = _write(tmp_path / "m.safetensors", {"w": np.ones(1000, np.float32)})
    p.write_bytes(p.read_bytes()[:-100])
    h = read_header(p)  # the header itself is intact: config and shapes stay readable
    assert h.truncated() == ["w"]
    with pytest.raises(CheckpointError, match="truncated"):
        load_tensors(h, ["w"])


def test_missing_prefix_and_not_safetensors(tmp_path):
    p = _write(tmp_path / "m.safetensors", {"w": np.ones(2, np.float32)})
    with pytest.raises(CheckpointError, match="no tensors under 'vae.'"):
        load_prefix(p, "vae.")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"hello")
    with pytest.raises(CheckpointError, match="too short"):
        read_header(bad)


def test_strict_load_names_every_problem():
    m = nn.Linear(3, 2)
    good = {"weight": mx.zeros((2, 3)), "bias": mx.zeros((2,))}
    load_strict(m, dict(good), "demo")
    with pytest.raises(CheckpointError) as e:
        load_strict(m, {"weight": mx.zeros((3, 3)), "extra": mx.zeros((1,))}, "demo")
    msg = str(e.value)
    assert "missing tensor bias (model expects shape (2,))" in msg
    assert "unexpected tensor extra" in msg
    assert "tensor weight: model expects shape (2, 3), checkpoint has (3, 3)" in msg


def test_conv_layouts_match_torch_semantics():
    """(out, in, k) -> (out, k, in) for convs; (in, out, k) -> (out, k, in) for transposed convs."""
    from ltx2.models.weights import conv_transpose_weight_to_mlx, conv_weight_to_mlx

    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 5, 3)).astype(np.float32)  # (N, L, C_in) in MLX layout
    w = rng.standard_normal((4, 3, 2)).astype(np.float32)  # torch Conv1d: (out=4, in=3, k=2)
    y = mx.conv1d(mx.array(x), conv_weight_to_mlx(mx.array(w)))
    ref = np.stack([sum(x[0, t + j] @ w[:, :, j].T for j in range(2)) for t in range(4)])
    np.testing.assert_allclose(np.array(y)[0], ref, rtol=1e-5, atol=1e-5)
    wt = rng.standard_normal((3, 4, 2)).astype(np.float32)  # torch ConvTranspose1d: (in=3, out=4, k=2)
    yt = mx.conv_transpose1d(mx.array(x), conv_transpose_weight_to_mlx(mx.array(wt)))
    ref_t = np.zeros((6, 4), np.float32)
    for t in range(5):
        for j in range(2):
            ref_t[t + j] += x[0, t] @ wt[:, :, j]
    np.testing.assert_allclose(np.array(yt)[0], ref_t, rtol=1e-5, atol=1e-5)
