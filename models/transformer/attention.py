"""Multi-head attention with RMS-normalised queries/keys, split RoPE and query chunking."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from ltx2.models import cpu_math

from .rope import RopeTable, apply_rope

# Queries per SDPA call. On CPU, MLX's SDPA materialises the whole (heads, queries, keys) score
# matrix; 1024 queries x 32 heads x ~6k keys is ~0.8 GB in float32. The fused Metal kernel does not
# need this, and on it the chunking costs only a few extra launches.
DEFAULT_QUERY_CHUNK = 1024


def _on_cpu() -> bool:
    return mx.default_device().type == mx.DeviceType.cpu


def attend(q: mx.array, k: mx.array, v: mx.array, mask: mx.array | None = None,
           query_chunk: int | None = DEFAULT_QUERY_CHUNK) -> mx.array:
    """Softmax attention on (B, heads, T, D) tensors; ``mask`` is additive, broadcastable to (B, heads, Tq, Tk)."""
    scale = q.shape[-1] ** -0.5
    if cpu_math.use_numpy(q):  # MLX's CPU softmax is scalar: see cpu_math
        return cpu_math.attention(q, k, v, scale, mask, query_chunk)
    if mask is not None:
        mask = mask.astype(q.dtype)
    tq = q.shape[2]
    if not query_chunk or tq <= query_chunk:
        return mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask)
    outs = []
    # On CPU each chunk is evaluated before the next is built: MLX would otherwise evaluate the whole
    # chunked graph at once and hold every chunk's score matrix together, which is what chunking avoids.
    evaluate = _on_cpu()
    for s in range(0, tq, query_chunk):
        m = mask
        if m is not None and m.shape[-2] != 1:
            m = m[..., s:s + query_chunk, :]
        outs.append(mx.fast.scaled_dot_product_attention(q[:, :, s:s + query_chunk], k, v, scale=scale, mask=m))
        if evaluate:
            mx.eval(outs[-1])
    return mx.concatenate(outs, axis=2)


class Attention(nn.Module):
    """Attention from ``query_dim`` tokens onto ``context_dim`` tokens (self-attention when no context).

    Query/key RMS norms span all heads (one weight of size heads * head_dim), applied before RoPE.
    ``gated`` (LTX-2.3): each head's output is scaled by 2 * sigmoid of a per-head logit read from the
    query input (``to_gate_logits``), whichever path produced it (attention, or the STG value path).
    """

    def __init__(self, query_dim: int, heads: int, head_dim: int, context_dim: int | None = None,
                 eps: float = 1e-6, gated: bool = False):
        super().__init__()
        inner = heads * head_dim
        context_dim = query_dim if context_dim is None else context_dim
        self.heads = heads
        self.head_dim = head_dim
        self.query_chunk: int | None = DEFAULT_QUERY_CHUNK
        self.to_q = nn.Linear(query_dim, inner)
        self.to_k = nn.Linear(context_dim, inner)
        self.to_v = nn.Linear(context_dim, inner)
        self.q_norm = nn.RMSNorm(inner, eps=eps)
        self.k_norm = nn.RMSNorm(inner, eps=eps)
        self.to_out = nn.Linear(inner, query_dim)
        if gated:
            self.to_gate_logits = nn.Linear(query_dim, heads)

    def _gate(self, x: mx.array, out: mx.array) -> mx.array:
        """``out`` (B, T, heads * head_dim) with each head scaled by 2 * sigmoid(its logit from ``x``)."""
        if "to_gate_logits" not in self:
            return out
        b, t, _ = out.shape
        gates = 2.0 * mx.sigmoid(self.to_gate_logits(x))  # (B, T, heads)
        return (out.reshape(b, t, self.heads, self.head_dim) * gates[..., None]).reshape(b, t, -1)

    def _heads(self, x: mx.array) -> mx.array:
        b, t, _ = x.shape
        return x.reshape(b, t, self.heads, self.head_dim).transpose(0, 2, 1, 3)

    def __call__(self, x: mx.array, context: mx.array | None = None, *, rope: RopeTable | None = None,
                 k_rope: RopeTable | None = None, mask: mx.array | None = None,
                 value_only: bool = False, keep: mx.array | None = None) -> mx.array:
        """``value_only``: skip attention, output to_out(to_v(context)) (STG, whole batch).
        ``keep``: (B, 1, 1) in {0, 1}: per batch element, attention (1) or the value path (0)."""
        context = x if context is None else context
        v = self.to_v(context)
        if value_only:
            return self.to_out(self._gate(x, v))
        q = self._heads(self.q_norm(self.to_q(x)))
        k = self._heads(self.k_norm(self.to_k(context)))
        if rope is not None:
            q = apply_rope(q, rope)
            k = apply_rope(k, rope if k_rope is None else k_rope)
        out = attend(q, k, self._heads(v), mask, self.query_chunk)
        b, _, t, _ = out.shape
        out = out.transpose(0, 2, 1, 3).reshape(b, t, -1)
        if keep is not None:
            out = out * keep + v * (1 - keep)
        return self.to_out(self._gate(x, out))
