"""Longformer: a sliding window plus ``n`` global tokens at the start (Beltagy et al., 2020).

The ``n`` leading tokens are global: they attend to every key and every query attends to them. The
common ``g`` (0/1/2) only knows the first and the last token, so the count of leading global tokens
is this family's own parameter ``n``; ``g`` still adds the last token when set to 2. The window is the
common ``w``, whose default here is 3 so that the family's default is Longformer's own pattern.
"""

from __future__ import annotations

from predictors.base import Param, Predictor
from predictors.errors import PredictorError
from predictors.graphs import GlobalGraph
from predictors.registry import register
from predictors.torch.bigbird import with_defaults


@register
class Longformer(Predictor):
    """Window of width ``w`` + global tokens ``0 .. n-1`` (full rows and columns); nothing is fitted.

    FLOPs: 0 per head, a fixed pattern.
    """

    kind = "fixed"
    family = "longformer"
    params = (Param("n", "n", int, 2, doc="number of global tokens at the start of the sample"),)

    @classmethod
    def all_params(cls):
        return tuple(cls.params) + with_defaults(w=3)

    def check(self):
        super().check()
        if self.n < 0:
            raise PredictorError(f"{self.family}: global token count n must be >= 0, got {self.n}")

    @property
    def variant(self) -> str:
        """Its own global tokens ``0 .. n-1`` include the first token: helped when ``n >= 1`` and ``w >= 3``."""
        return "helped" if self.values["w"] >= 3 and (self.values["g"] >= 1 or self.n >= 1) else "bare"

    def _predict(self, view, layer):
        if self.n == 0:
            return None
        return GlobalGraph(tuple(range(self.n)), view.q.shape[1])
