"""FLOP counts of attention, dense and on a predicted graph (documented formulas, per head).

For ``pairs`` (query, key) pairs computed, head dim ``d`` and value dim ``dv``:

    attention_flops(pairs, d, dv) = pairs * (2 d + 2 dv + ENTMAX_PER_PAIR)

``2 d`` for the dot product q.k, ``2 dv`` for accumulating p * v, and ``ENTMAX_PER_PAIR`` for the
1.5-entmax map itself (subtract max, halve, square, threshold: a handful of operations per entry; the
sort adds ``log`` factors that we do not count). Dense attention computes every valid pair:
``n^2`` (bidirectional) or ``n(n+1)/2`` (causal). A predictor adds its own prediction cost
(``Predictor.flops``).
"""

ENTMAX_PER_PAIR = 6


def attention_flops(pairs: float, d: int, dv: int | None = None) -> float:
    dv = d if dv is None else dv
    return float(pairs) * (2 * d + 2 * dv + ENTMAX_PER_PAIR)
