"""Sparsefinder Bench: measure attention sparsity predictors against exact entmax attention."""

__version__ = "0.1.0"
