"""Small seeded attention data for tests and scaling runs.

Queries and keys are drawn around ``clusters`` shared centres (so attention has structure a predictor
can find), with a per-head random rotation; values are Gaussian. ``sharpness`` scales Q and K, and so
the sparsity of the entmax attention. Same arguments, same tensors, bit for bit.
"""

from __future__ import annotations

import torch

from predictors.data import AttentionData


def synthetic(samples: int = 4, layers: int = 2, heads: int = 4, kv_heads: int | None = None,
              length: int = 64, dim: int = 16, causal: bool = False, seed: int = 0,
              clusters: int = 4, sharpness: float = 2.0, ragged: bool = True,
              dtype: torch.dtype = torch.float32) -> AttentionData:
    """Seeded synthetic data ``[samples, layers, heads, length, dim]``.

    With ``ragged``, sample ``s`` has ``length - 7 * s`` valid tokens (at least 2): padding is always
    exercised.
    """
    kv_heads = kv_heads or heads
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(layers, heads, clusters, dim, generator=g)
    assign_q = torch.randint(clusters, (samples, layers, heads, length), generator=g)
    assign_k = torch.randint(clusters, (samples, layers, heads, length), generator=g)
    gather = lambda a: torch.stack([centres[li, h][a[:, li, h]] for li in range(layers) for h in range(heads)], 1)
    q = gather(assign_q).reshape(samples, layers, heads, length, dim)
    k = gather(assign_k).reshape(samples, layers, heads, length, dim)
    q = sharpness * (q + 0.5 * torch.randn(q.shape, generator=g))
    k = sharpness * (k + 0.5 * torch.randn(k.shape, generator=g))
    group = heads // kv_heads
    k = k[:, :, ::group].contiguous()
    v = torch.randn(samples, layers, kv_heads, length, dim, generator=g)
    if ragged:
        lengths = torch.tensor([max(2, length - 7 * s) for s in range(samples)], dtype=torch.int64)
    else:
        lengths = torch.full((samples,), length, dtype=torch.int64)
    return AttentionData(
        q=q.to(dtype), k=k.to(dtype), v=v.to(dtype), lengths=lengths, causal=causal,
        name="synthetic",
        descriptor={"source": "synthetic", "samples": samples, "layers": layers, "heads": heads,
                    "kv_heads": kv_heads, "length": length, "dim": dim, "causal": causal, "seed": seed,
                    "clusters": clusters, "sharpness": sharpness, "ragged": ragged},
    )
