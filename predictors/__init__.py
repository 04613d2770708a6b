"""Attention sparsity predictors: ``predictors.get(name)`` builds one by name.

Importing this package imports neither FAISS nor any predictor family module.
"""

from predictors.registry import families, get, parse_name

__all__ = ["families", "get", "parse_name"]
