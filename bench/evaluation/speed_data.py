"""The data of the speed benchmarks: one layer of MiniLM-shaped synthetic heads at any length ``n``,
and a short seeded fit set with its gold (what the predictors learn does not depend on ``n``)."""

from __future__ import annotations

import functools

from bench.data.synthetic import synthetic
from bench.evaluation.prepared import gold_for

HEADS, DIM = 12, 32
VIEW_SEED = 2  # the seed of scaling_view's distribution
GPU_CLUSTERS = 8


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


def gpu_shaped(samples: int, length: int, heads: int, dim: int, causal: bool, seed: int = VIEW_SEED,
               ragged: bool = True):
    """The GPU benchmark's synthetic data (``--profile gpu``): one layer of ``heads`` heads of dimension
    ``dim`` (16 and 64 there: a large model's attention shape), sharpness 3 as :func:`minilm_shaped`, and
    :data:`GPU_CLUSTERS` clusters per head (long sequences hold more distinct groups of keys than
    MiniLM-shaped data's 4)."""
    return synthetic(samples=samples, layers=1, heads=heads, length=length, dim=dim, causal=causal, seed=seed,
                     clusters=GPU_CLUSTERS, sharpness=3.0, ragged=ragged)


@functools.lru_cache(maxsize=1)
def gpu_fit_set(heads: int, dim: int, causal: bool):
    """Four samples of 256 tokens from the distribution of :func:`gpu_view` (the same cluster centres,
    other tokens) and their gold: what the GPU benchmark's predictors fit on, on the CPU."""
    data = gpu_shaped(4, 256, heads, dim, causal)
    return data, gold_for(data)


@functools.lru_cache(maxsize=8)
def gpu_view(n: int, heads: int, dim: int, causal: bool):
    """One sample of ``n`` tokens of :func:`gpu_shaped` (no padding), on the CPU: the data every GPU
    benchmark times at length ``n`` (kept for every length of the profile: drawing 32768 tokens of 16
    heads takes seconds, and the cases revisit each length once per method and dtype)."""
    return gpu_shaped(1, n, heads, dim, causal, ragged=False).layer(0)
