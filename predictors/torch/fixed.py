"""The "fixed" pattern of the Sparse Transformer (Child et al., 2019).

With stride ``l`` and ``c`` summary positions per stride, query ``i`` sees key ``j`` when

    floor(j / l) == floor(i / l)      (same block of l tokens)
 or (j mod l) >= l - c                (j is one of the last c tokens of its block: a summary column)

The rule is applied to every valid pair; in causal data the metrics keep only ``j <= i``, which is
the original causal pattern. ``c = l`` predicts everything, ``c = 0`` only the diagonal blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

from predictors.base import Param, Predictor
from predictors.errors import PredictorError
from predictors.graphs import FunctionGraph
from predictors.registry import register


@dataclass(frozen=True)
class FixedRule:
    """``rule(i, j)`` of the fixed pattern on broadcast index tensors."""

    stride: int
    summary: int

    def __call__(self, i, j):
        same_block = (j // self.stride) == (i // self.stride)
        summary = (j % self.stride) >= self.stride - self.summary
        return same_block | summary


@register
class FixedPattern(Predictor):
    """Sparse Transformer fixed pattern with stride ``l`` and ``c`` summary columns; nothing is fitted.

    FLOPs: 0 per head, a fixed pattern.
    """

    kind = "fixed"
    family = "fixed"
    params = (
        Param("l", "l", int, 16, doc="stride: block length"),
        Param("c", "c", int, 2, doc="summary columns: the last c positions of every block"),
    )

    def check(self):
        super().check()
        if self.l < 1:
            raise PredictorError(f"{self.family}: stride l must be >= 1, got {self.l}")
        if not 0 <= self.c <= self.l:
            raise PredictorError(f"{self.family}: summary columns c must be in [0, l={self.l}], got {self.c}")

    def _predict(self, view, layer):
        return FunctionGraph(FixedRule(self.l, self.c), view.q.shape[1], name=self.name)
