"""The data of the speed benchmarks: one layer of MiniLM-shaped synthetic heads at any length ``n``,
and a short seeded fit set with its gold (what the predictors learn does not depend on ``n``)."""

from __future__ import annotations

import functools

from bench.data.synthetic import synthetic
from bench.evaluation.prepared import gold_for

HEADS, DIM = 12, 32
VIEW_SEED = 2  # the seed of scaling_view's distribution


def minilm_shaped(samples: int, length: int, seed: int, ragged: bool = True):
    """Synthetic data of MiniLM's attention shape, shared by the speed benchmarks: one layer of 12 heads
    of dimension 32, sharpness 3 (:func:`bench.data.synthetic.synthetic`)."""
    return synthetic(samples=samples, layers=1, heads=HEADS, length=length, dim=DIM, seed=seed, sharpness=3.0,
                     ragged=ragged)


@functools.lru_cache(maxsize=2)
def fit_set(seed: int = 1):
    """Four samples of 256 tokens and their gold. The scaling sweep only times, and fits on seed 1;
    ``seed=VIEW_SEED`` draws from the distribution of :func:`scaling_view` (the same cluster centres and
    head rotations, other tokens), for recalls measured on it."""
    data = minilm_shaped(4, 256, seed)
    return data, gold_for(data)


@functools.lru_cache(maxsize=2)
def scaling_view(n: int):
    return minilm_shaped(1, n, VIEW_SEED, ragged=False).layer(0)
