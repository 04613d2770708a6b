"""Errors the suite raises for bad input: each names the problem, never a deep traceback.

The base class and the data and predictor errors belong to the predictor protocol
(:mod:`predictors.errors`); the suite adds its own below.
"""

from predictors.errors import DataError, InputError, PredictorError

BenchError = InputError  # bad input or configuration, reported to the user as one line

__all__ = ["BenchError", "CacheError", "DataError", "PredictorError"]


class CacheError(BenchError):
    """A cache entry that is missing, corrupt or written by something else."""
