"""BigBird: a local window, global tokens and ``r`` random keys per query (Zaheer et al., 2020).

The pattern here is token-level, as in the Sparsefinder paper's comparison (not BigBird's blocks):
query ``i`` sees

* the centred window of total width ``w`` (common parameter, default 3 here),
* the global tokens of the common ``g`` (default 2 here: the first and the last token),
* ``r`` keys drawn uniformly without replacement from its valid keys: the sample's ``n`` keys, or
  in causal data the ``i + 1`` keys ``j <= i``, so that no draw is wasted on a key the metrics
  mask out. When fewer valid keys than ``r`` exist, all of them are taken.

The random keys are drawn at predict time from a generator seeded by the predictor seed and the
layer, so a seeded predictor is deterministic. The ``r`` keys of a query are the first ``r`` entries of
one uniform random permutation of its valid keys, drawn one position at a time with the same random
stream whatever ``r`` is: for the same seed, the keys of ``r`` are a subset of the keys of ``r + 1``.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from predictors.base import COMMON, Param, Predictor
from predictors.errors import PredictorError
from predictors.graphs import KeyListGraph
from predictors.registry import register


def with_defaults(**defaults) -> tuple[Param, ...]:
    """The common parameters (``w``, ``g``) with family-specific defaults.

    A common parameter whose default differs from the base one is no longer the base spec, so the
    predictor name always encodes it (``bigbird-r3-w3-g2``), whatever its value.
    """
    return tuple(replace(p, default=defaults[p.key]) if p.key in defaults else p for p in COMMON)


def layer_seed(seed: int, layer: int) -> int:
    """A 63-bit generator seed derived from the predictor seed and the layer index."""
    return (seed * 0x9E3779B97F4A7C15 + (layer + 1) * 0xBF58476D1CE4E5B9) % (1 << 63)


def random_keys(lengths: torch.Tensor, num_heads: int, t: int, r: int, causal: bool,
                generator: torch.Generator) -> torch.Tensor:
    """``r`` distinct uniform random valid keys per query, as prefixes of one random permutation.

    Parameters
    ----------
    lengths : int64 ``[S]``, valid tokens per sample
    num_heads, t : heads ``H`` and padded length ``T``
    r : keys per query
    causal : if true, query ``i`` draws from ``j <= i`` only
    generator : the source of randomness; step ``m`` always consumes one ``[S, H, T]`` float64 draw

    Returns
    -------
    int64 ``[S, H, T, r]``: key indices, ``-1`` where the query has fewer than ``m + 1`` valid keys
    (and on padding rows).

    Notes
    -----
    Step ``m`` draws ``u ~ U[0, 1)`` and takes the ``floor(u * (a - m))``-th key not chosen yet
    (``a`` = number of valid keys), which is sequential sampling without replacement: memory is
    ``O(S H T r)`` and time ``O(S H T r^2)``, never ``O(n^2)``.
    """
    s_count = lengths.shape[0]
    i = torch.arange(t)
    n = lengths[:, None]
    avail = torch.minimum(i[None, :] + 1, n) if causal else n.expand(s_count, t)
    avail = torch.where(i[None, :] < n, avail, torch.zeros_like(avail))
    avail = avail[:, None, :].expand(s_count, num_heads, t)
    chosen = torch.full((s_count, num_heads, t, r), -1, dtype=torch.long)
    for m in range(r):
        u = torch.rand((s_count, num_heads, t), generator=generator, dtype=torch.float64)
        remaining = avail - m
        pick = torch.minimum((u * remaining).long(), remaining - 1)
        # Map "the pick-th key not yet chosen" to a key index: walk the chosen keys in increasing
        # order, stepping over each one at or below the current candidate.
        for c in chosen[..., :m].sort(dim=-1).values.unbind(-1):
            pick = pick + (pick >= c).long()
        chosen[..., m] = torch.where(remaining > 0, pick, torch.full_like(pick, -1))
    return chosen


@register
class BigBird(Predictor):
    """Window + globals + ``r`` random keys per query; nothing is fitted.

    FLOPs: 0 per head. Drawing ``r`` random indices per query does no arithmetic on ``q`` or ``k``
    (``n * r`` random integers per head, negligible next to any ``n * d`` term), and the window and
    global tokens are fixed patterns.
    """

    kind = "fixed"
    family = "bigbird"
    randomised = True  # random keys; a configuration without them (r = 0) is not (see __init__)
    params = (Param("r", "r", int, 3, doc="random keys per query, uniform over its valid keys"),)

    @classmethod
    def all_params(cls):
        return tuple(cls.params) + with_defaults(w=3, g=2)

    def __init__(self, seed: int = 0, **values):
        super().__init__(seed=seed, **values)
        self.randomised = self.r > 0  # without random keys the graph is a fixed pattern

    def check(self):
        super().check()
        if self.r < 0:
            raise PredictorError(f"{self.family}: random keys r must be >= 0, got {self.r}")

    def _predict(self, view, layer):
        if self.r == 0:
            return None
        s_count, nh, t, _ = view.q.shape
        gen = torch.Generator().manual_seed(layer_seed(self.seed, layer))
        keys = random_keys(view.lengths.cpu(), nh, t, self.r, view.causal, gen)
        return KeyListGraph(keys)
