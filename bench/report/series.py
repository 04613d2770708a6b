"""What one colour of a plot and one row of a report table stands for: series, the baseline, the ceilings.

series
    the family, except that the window family is split by its sink tokens: ``window`` (none),
    ``window+sink`` (g = 1, the first token: the baseline every report shows explicitly,
    :data:`BASELINE_SERIES`), ``window+g<g>`` for other fixed ``g``, and ``window+learned-sink`` for sink
    columns learned from the fit samples (``s > 0``).
ceiling
    a family that reads the dense scores (``oracle-*``, :data:`CEILING_PREFIX`): drawn on every plot as
    the best any predictor could reach, never a winner of a "best family" statement.
"""

from __future__ import annotations

import math

BASELINE_SERIES = "window+sink"
LEARNED_SINK_SERIES = "window+learned-sink"
# Every ceiling family is named oracle-... (predictors/torch/oracle.py; tests/test_pareto.py checks the registry).
CEILING_PREFIX = "oracle-"


def is_ceiling(series: str) -> bool:
    """Whether a family or series is a ceiling (reads the dense scores; see the module docstring)."""
    return isinstance(series, str) and series.startswith(CEILING_PREFIX)


def _int_param(params: dict | None, key: str) -> int:
    v = (params or {}).get(key, 0)
    return 0 if v is None or (isinstance(v, float) and math.isnan(v)) else int(v)


def series_label(family: str, params: dict | None) -> str:
    """The series of a configuration: its family, with the window family split by sink tokens (fixed
    ``g``, learned ``s``; see the module docstring)."""
    if family != "window":
        return family
    g, s = _int_param(params, "g"), _int_param(params, "s")
    label = {0: "window", 1: BASELINE_SERIES}.get(g, f"window+g{g}")
    if s > 0:
        label = LEARNED_SINK_SERIES if g == 0 else f"{label}+learned-sink"
    return label
