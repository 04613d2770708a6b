"""Budgets calibrated per layer and head: a target sparsity turned into each head's own threshold.

A threshold that suits one head is meaningless for another (projected distance scales differ by head,
on real models by 70x and more). A family whose knob is a continuous threshold therefore also takes a
target sparsity ``sp``: on the *fit* samples, each head's threshold is put at the quantile of its
values over the valid pairs that leaves the share ``sp`` of those pairs out of the prediction. Eval
samples never enter the calibration.

For values ``x_1 <= ... <= x_M`` of one head (every valid pair of every fit sample, pooled), and a pair
predicted when its value is strictly below the threshold, the threshold is ``x_(k+1)`` with
``k = round((1 - sp) M)``: exactly ``k`` pairs are predicted when there are no ties at it (the fit
sparsity is then ``1 - k / M``, within ``1 / (2M)`` of ``sp``); ``k = M`` gives ``+inf``.

Block families predict whole tiles, so one value stands for many pairs: :func:`weighted_thresholds_below`
takes a weight per value (the valid pairs of its tile, :func:`block_pair_counts`) and puts the threshold
where the predicted weight is closest to the share ``1 - sp`` of all weight. Values ``-inf`` are always
predicted (tiles the family keeps whatever the budget), ``+inf`` never.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from predictors.data import AttentionData
from predictors.errors import PredictorError
from predictors.masking import allowed_keys


def check_target_sparsity(family: str, sp: float) -> None:
    """A target sparsity is a share of pairs left out: ``0 <= sp <= 1``."""
    if not 0.0 <= sp <= 1.0:
        raise PredictorError(f"{family}: target sparsity sp must be in [0, 1], got {sp}")


def one_budget(family: str, values: dict, knob: str, default) -> bool:
    """Check a family's budget: its absolute ``knob`` or the calibrated ``sp``, never both; a valid ``sp``;
    ``values[knob] = default`` when neither is given. True when the budget is calibrated (``sp``)."""
    if values[knob] is not None and values["sp"] is not None:
        raise PredictorError(f"{family}: give one budget, {knob} (absolute) or sp (calibrated), not both")
    if values["sp"] is not None:
        check_target_sparsity(family, values["sp"])
        return True
    if values[knob] is None:
        values[knob] = default
    return False


def thresholds_below(values: torch.Tensor, sp: float) -> torch.Tensor:
    """Per-head thresholds ``[H]`` from pooled values ``[H, M]`` (see the module docstring)."""
    heads, m = values.shape
    if m == 0:
        return torch.full((heads,), float("inf"))
    k = int(round((1.0 - sp) * m))
    if k >= m:
        return torch.full((heads,), float("inf"))
    return torch.kthvalue(values.float(), k + 1, dim=1).values


def valid_pair_values(data: AttentionData, pair_values: Callable[[int, int], torch.Tensor]) -> torch.Tensor:
    """Values of every valid pair of every sample of ``data``, pooled per head: ``[H, M]``.

    ``pair_values(s, n)`` gives sample ``s``'s values ``[H, n, n]`` over its ``n`` valid tokens; when the
    data is causal, only the pairs ``j <= i`` count.
    """
    parts = []
    for s in range(data.num_samples):
        n = int(data.lengths[s])
        vals = pair_values(s, n)
        allowed = allowed_keys(0, n, n, data.causal)
        parts.append(vals[:, allowed])
    return torch.cat(parts, dim=1) if parts else torch.zeros(data.num_heads, 0)


def calibrate_below(data: AttentionData, sp: float,
                    layer_values: Callable[[int], Callable[[int, int], torch.Tensor]]) -> torch.Tensor:
    """Thresholds ``[L, H]`` leaving fit sparsity ``sp`` per layer and head, for a family that predicts a
    pair when its value is strictly below the threshold; ``layer_values(layer)`` returns the layer's
    ``pair_values(s, n)`` (see :func:`valid_pair_values`), so per-layer work is done once."""
    return torch.stack([thresholds_below(valid_pair_values(data, layer_values(li)), sp)
                        for li in range(data.num_layers)])


def weighted_thresholds_below(values: torch.Tensor, weights: torch.Tensor, sp: float) -> torch.Tensor:
    """Per-head thresholds ``[H]`` for values ``[H, M]`` of weights ``[H, M]`` (or ``[M]``), predicted when
    strictly below the threshold.

    With ``W`` the total weight and ``kept(x) = sum {w_m : v_m < x}``, the threshold is the candidate ``x``
    minimising ``|kept(x) - (1 - sp) W|``, among the finite values and ``+inf`` (the smallest such ``x``
    on a tie: the sparser side). A threshold can only fall between distinct values, so tied values are
    kept or left out together. Weights ``w >= 0``; an empty head gets ``+inf``.
    """
    heads, m = values.shape
    if m == 0:
        return torch.full((heads,), float("inf"))
    w = torch.broadcast_to(weights, values.shape).double()
    v, order = values.float().sort(dim=1)
    w = w.gather(1, order)
    below = w.cumsum(1) - w  # weight strictly below v[:, i] when i starts a run of ties
    starts = torch.ones_like(v, dtype=torch.bool)
    starts[:, 1:] = v[:, 1:] > v[:, :-1]
    target = (1.0 - sp) * w.sum(1, keepdim=True)
    cost = (below - target).abs().masked_fill(~starts | (v == float("-inf")), float("inf"))
    everything = w.masked_fill(v == float("inf"), 0.0).sum(1, keepdim=True)  # kept under x = +inf
    cost = torch.cat([cost, (everything - target).abs()], dim=1)
    best = cost.argmin(dim=1)  # the first minimum: the smallest threshold
    cand = torch.cat([v, torch.full((heads, 1), float("inf"))], dim=1)
    return cand.gather(1, best[:, None]).squeeze(1)


def block_pair_counts(n: int, block: int, causal: bool) -> torch.Tensor:
    """Valid pairs of each ``block x block`` tile of a sample with ``n`` tokens: float64 ``[M, M]``,
    ``M = ceil(n / block)``. Tile ``(a, b)`` holds ``r_a c_b`` pairs (``r_a``, ``c_b``: its valid rows and
    columns); causal: the same below the diagonal, ``r_a (r_a + 1) / 2`` on it, 0 above."""
    m = -(-n // block)
    sizes = (n - torch.arange(m) * block).clamp(max=block).double()
    counts = sizes[:, None] * sizes[None, :]
    if causal:
        counts = counts.tril(-1) + torch.diag(sizes * (sizes + 1) / 2)
    return counts
