"""Errors the suite raises for bad input: each names the problem, never a deep traceback."""


class BenchError(ValueError):
    """Base class: bad input or configuration, reported to the user as one line."""


class DataError(BenchError):
    """Malformed attention data, text corpus or external file."""


class CacheError(BenchError):
    """A cache entry that is missing, corrupt or written by something else."""


class PredictorError(BenchError):
    """An unknown predictor, bad parameters, or a predictor used before it was fitted."""
