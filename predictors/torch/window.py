"""Window only: the local window of the common ``w`` parameter, with optional globals ``g``."""

from predictors.base import Predictor
from predictors.registry import register


@register
class WindowOnly(Predictor):
    """A centred window of total width ``w`` (and ``g`` global tokens); nothing learned."""

    kind = "fixed"
    family = "window"
