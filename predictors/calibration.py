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
