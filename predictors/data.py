"""The attention data every predictor is fitted on and scored against.

One :class:`AttentionData` holds, for ``S`` text samples, the queries, keys and (optionally) values of
every layer and head of one model, padded to ``T`` tokens:

* ``q``: float tensor ``[S, L, H, T, D]``
* ``k``: float tensor ``[S, L, Hk, T, D]``, ``H % Hk == 0``; query head ``h`` reads key head
  ``h // (H // Hk)`` (grouped-query attention; ``Hk == H`` is ordinary multi-head attention)
* ``v``: like ``k``, or ``None``
* ``lengths``: int64 ``[S]``, valid tokens per sample, padding at the end

The attention of layer ``l``, head ``h`` on sample ``s`` is
``alpha-entmax(scale * q[s, l, h] @ k[s, l, h // g].T)`` over the valid (and, when ``causal``, past)
keys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch

from predictors.errors import DataError

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# Fit / validation / eval fractions of the samples, for every source (AttentionData.split_three).
DEFAULT_SPLIT = (0.5, 0.25, 0.25)


@dataclass
class AttentionData:
    """Per-layer, per-head Q, K, V of ``S`` samples; see the module docstring for shapes."""

    q: torch.Tensor
    k: torch.Tensor
    lengths: torch.Tensor
    causal: bool
    v: torch.Tensor | None = None
    scale: float | None = None
    alpha: float = 1.5
    name: str = "unnamed"
    descriptor: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.scale is None:
            self.scale = 1.0 / math.sqrt(self.q.shape[-1]) if self.q.ndim == 5 else 1.0
        validate(self)

    # -- shape helpers -------------------------------------------------------------------------
    @property
    def num_samples(self) -> int:
        return self.q.shape[0]

    @property
    def num_layers(self) -> int:
        return self.q.shape[1]

    @property
    def num_heads(self) -> int:
        return self.q.shape[2]

    @property
    def num_kv_heads(self) -> int:
        return self.k.shape[2]

    @property
    def max_len(self) -> int:
        return self.q.shape[3]

    @property
    def head_dim(self) -> int:
        return self.q.shape[4]

    def layer(self, layer: int) -> LayerView:
        """Q, K, V of one layer with key heads expanded to the ``H`` query heads."""
        group = self.num_heads // self.num_kv_heads
        k = self.k[:, layer].repeat_interleave(group, dim=1) if group > 1 else self.k[:, layer]
        v = None
        if self.v is not None:
            v = self.v[:, layer].repeat_interleave(group, dim=1) if group > 1 else self.v[:, layer]
        return LayerView(q=self.q[:, layer], k=k, v=v, lengths=self.lengths, causal=self.causal,
                         scale=self.scale, alpha=self.alpha)

    def select(self, samples) -> AttentionData:
        """A new dataset with only ``samples`` (indices), trimmed to their longest length."""
        idx = torch.as_tensor(list(samples), dtype=torch.long)
        if idx.numel() == 0:
            raise DataError("selection of samples is empty")
        lengths = self.lengths[idx]
        t = int(lengths.max())
        return replace(
            self, q=self.q[idx, ..., :t, :], k=self.k[idx, ..., :t, :],
            v=None if self.v is None else self.v[idx, ..., :t, :], lengths=lengths,
            descriptor={**self.descriptor, "samples": [int(i) for i in idx]},
        )

    def split(self, fit_fraction: float = 0.5) -> tuple[AttentionData, AttentionData]:
        """Split by sample (never by position) into a fit part and an eval part.

        The first ``round(S * fit_fraction)`` samples (at least one, at most ``S - 1``) are the fit
        part; learned predictors only ever see those, and are scored on the rest.
        """
        s = self.num_samples
        if s < 2:
            raise DataError(f"need at least 2 samples to split into fit and eval parts, have {s}")
        n_fit = min(max(1, round(s * fit_fraction)), s - 1)
        fit, ev = self.select(range(n_fit)), self.select(range(n_fit, s))
        fit.descriptor["part"], ev.descriptor["part"] = "fit", "eval"
        return fit, ev

    def split_three(self, fractions: tuple[float, float, float] = DEFAULT_SPLIT,
                    ) -> tuple[AttentionData, AttentionData, AttentionData]:
        """Split by sample (never by position) into fit, validation and eval parts, in sample order.

        ``fractions`` (fit, val, eval), each > 0, sum 1 (see :func:`check_split`): the first
        ``round(S f_fit)`` samples fit, the next ``round(S f_val)`` validate, the rest are scored; every
        part has at least one sample. Learned predictors see only the fit part; configurations are
        chosen on the validation part and reported on the eval part.
        """
        check_split(fractions)
        s = self.num_samples
        if s < 3:
            raise DataError(f"need at least 3 samples to split into fit, val and eval parts, have {s}")
        n_fit = min(max(1, round(s * fractions[0])), s - 2)
        n_val = min(max(1, round(s * fractions[1])), s - n_fit - 1)
        bounds = (0, n_fit, n_fit + n_val, s)
        parts = tuple(self.select(range(bounds[i], bounds[i + 1])) for i in range(3))
        for part, name in zip(parts, ("fit", "val", "eval")):
            part.descriptor["part"] = name
        return parts



def check_split(fractions) -> tuple[float, float, float]:
    """``fractions`` as a (fit, val, eval) triple of positive numbers summing to 1 (within 1e-9)."""
    try:
        f = tuple(float(x) for x in fractions)
    except (TypeError, ValueError):
        raise DataError(f"split {fractions!r}: three numbers fit,val,eval expected") from None
    if len(f) != 3 or not all(0.0 < x < 1.0 for x in f) or abs(sum(f) - 1.0) > 1e-9:
        raise DataError(f"split {fractions!r}: three fractions fit,val,eval, each in (0, 1), summing to 1")
    return f


@dataclass
class LayerView:
    """One layer: ``q``, ``k``, ``v`` as ``[S, H, T, D]`` (key heads expanded), ``lengths`` ``[S]``."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor | None
    lengths: torch.Tensor
    causal: bool
    scale: float
    alpha: float = 1.5

    def heads(self, heads) -> LayerView:
        sel = torch.as_tensor(list(heads), dtype=torch.long)
        return replace(self, q=self.q[:, sel], k=self.k[:, sel], v=None if self.v is None else self.v[:, sel])


def validate(data: AttentionData) -> None:
    """Check shapes, dtypes, lengths and finiteness; raise :class:`DataError` naming the problem."""
    q, k, v, lengths = data.q, data.k, data.v, data.lengths
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise DataError(f"{name} must be a torch tensor, got {type(t).__name__}")
        if t.dtype not in FLOAT_DTYPES:
            raise DataError(f"{name} has dtype {t.dtype}; expected one of float16, bfloat16, float32, float64")
        if t.ndim != 5:
            raise DataError(f"{name} has shape {tuple(t.shape)}; expected 5 dimensions [S, L, H, T, D]")
    s, nl, h, t, d = q.shape
    if k.shape[0] != s or k.shape[1] != nl or k.shape[3] != t or k.shape[4] != d:
        raise DataError(f"k has shape {tuple(k.shape)}; expected [S={s}, L={nl}, Hk, T={t}, D={d}] to match q")
    if k.shape[2] == 0 or h % k.shape[2] != 0:
        raise DataError(f"q has H={h} heads, not divisible by the Hk={k.shape[2]} key heads of k")
    if v is not None and v.shape[:4] != k.shape[:4]:
        raise DataError(f"v has shape {tuple(v.shape)}; expected [S, L, Hk, T, Dv] = {tuple(k.shape[:4])} + [Dv]")
    if q.dtype != k.dtype or (v is not None and v.dtype != q.dtype):
        raise DataError(f"q, k and v must share one dtype, got q {q.dtype}, k {k.dtype}"
                        + ("" if v is None else f", v {v.dtype}"))
    if not isinstance(lengths, torch.Tensor) or lengths.dtype != torch.int64 or lengths.shape != (s,):
        got = tuple(lengths.shape) if isinstance(lengths, torch.Tensor) else type(lengths).__name__
        raise DataError(f"lengths must be an int64 tensor of shape [S={s}], got {got}")
    if s == 0 or t == 0 or d == 0:
        raise DataError(f"q has an empty dimension: shape {tuple(q.shape)}")
    short = (lengths < 2).nonzero().flatten().tolist()
    if short:
        raise DataError(f"samples {short[:8]} have length {lengths[short[0]].item()} "
                        "(< 2 tokens): attention over one key is trivial; drop them")
    if int(lengths.max()) > t:
        bad = (lengths > t).nonzero().flatten().tolist()
        raise DataError(f"samples {bad[:8]} have lengths beyond T={t} (max {int(lengths.max())})")
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x is None:
            continue
        # Padding is free to hold anything, only valid positions must be finite.
        valid = torch.arange(t)[None, :] < lengths[:, None]  # [S, T]
        bad = ~torch.isfinite(x) & valid[:, None, None, :, None]
        if bad.any():
            where = bad.nonzero()[0].tolist()
            raise DataError(f"{name} holds NaN or inf at valid position (sample, layer, head, token, dim) = "
                            f"{tuple(where)} (layer {where[1]})")
    if not (data.scale > 0 and math.isfinite(data.scale)):
        raise DataError(f"scale must be a positive finite number, got {data.scale}")
    if not (data.alpha > 1 and math.isfinite(data.alpha)):
        raise DataError(f"alpha must be a finite number > 1 (1.5 for 1.5-entmax), got {data.alpha}")
