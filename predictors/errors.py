"""Errors for bad input: each names the problem in one line, never a deep traceback.

:class:`InputError` is the base of every error that the suite reports to a user as one line (exit 2);
``bench.errors.BenchError`` is the same class.
"""


class InputError(ValueError):
    """Base class: bad input or configuration, reported to the user as one line."""


class DataError(InputError):
    """Malformed attention data, text corpus or external file."""


class PredictorError(InputError):
    """An unknown predictor, bad parameters, or a predictor used before it was fitted."""
