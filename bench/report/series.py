"""What one colour of a plot and one row of a report table stands for: series, the baseline, the ceilings.

series
    the family, except that the window family is split by its sink tokens: ``window`` (none),
    ``window+sink`` (g = 1, the first token: the baseline every report shows explicitly,
    :data:`BASELINE_SERIES`), ``window+g<g>`` for other fixed ``g``, and ``window+learned-sink`` for sink
    columns learned from the fit samples (``s > 0``).
ceiling
    a family of kind ``ceiling`` (it reads the dense scores; the registry's class attribute): drawn on
    every plot as the best any predictor could reach, never a winner of a "best family" statement.
reference series
    the baseline and the ceilings: shown beside every family, in both variants (:func:`is_reference`).
kind
    what a family reads to predict (``learned``, ``fixed``, ``hashing``, ``block``, ``ceiling``), as
    recorded (``family_kind``); runs written before records carried it take the registry's.
variant
    ``bare`` (the predictor alone) or ``helped`` (it includes the paper's helper: a window of
    ``w >= 3`` and the first token, ``g >= 1``), as recorded; older runs: inferred from the parameters
    by that very rule (:func:`variant_of`).
"""

from __future__ import annotations

import math

BASELINE_SERIES = "window+sink"
LEARNED_SINK_SERIES = "window+learned-sink"
VARIANTS = ("bare", "helped")


def registry_kind(family: str) -> str | None:
    """The kind of a registered family (``predictors.registry``), None for a name it does not know."""
    from predictors.errors import PredictorError
    from predictors.registry import family_class

    try:
        return family_class(family).kind
    except PredictorError:
        return None


def is_ceiling(series: str) -> bool:
    """Whether a family or series is a ceiling (kind ``ceiling``; see the module docstring)."""
    return isinstance(series, str) and registry_kind(series) == "ceiling"


def is_reference(series: str) -> bool:
    """The baseline and the ceilings: drawn and tabled beside every family, whatever the variant."""
    return series == BASELINE_SERIES or is_ceiling(series)


def family_kind(family: str, recorded: str | None = None) -> str:
    """The recorded kind, else the registry's kind of the family, else ``unknown``."""
    if recorded:
        return str(recorded)
    return registry_kind(family) or "unknown"


def variant_of(params: dict | None, recorded: str | None = None) -> tuple[str, bool]:
    """``(variant, recorded)``: the recorded variant, else ``helped`` when the parameters hold the
    paper's helper (``w >= 3`` and ``g >= 1``), ``bare`` otherwise; the flag says which it was."""
    if recorded:
        return str(recorded), True
    return ("helped" if _int_param(params, "w") >= 3 and _int_param(params, "g") >= 1 else "bare"), False


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
