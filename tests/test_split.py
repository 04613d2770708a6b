"""Fit / validation / eval split by sample: the same rule for every source."""

from __future__ import annotations

import pytest
import torch

from bench.data.synthetic import synthetic
from predictors.data import check_split
from predictors.errors import DataError


@pytest.mark.parametrize("samples, fractions, sizes", [
    (16, (0.5, 0.25, 0.25), (8, 4, 4)),
    (8, (0.5, 0.25, 0.25), (4, 2, 2)),
    (3, (0.5, 0.25, 0.25), (1, 1, 1)),
    (10, (0.6, 0.2, 0.2), (6, 2, 2)),
    (4, (0.9, 0.05, 0.05), (2, 1, 1)),  # every part keeps at least one sample
])
def test_parts_are_consecutive_samples_of_the_stated_sizes(samples, fractions, sizes):
    d = synthetic(samples=samples, layers=1, heads=2, length=20, dim=4)
    parts = d.split_three(fractions)
    assert tuple(p.num_samples for p in parts) == sizes
    assert [p.descriptor["part"] for p in parts] == ["fit", "val", "eval"]
    seen = [i for p in parts for i in p.descriptor["samples"]]
    assert seen == list(range(samples))  # disjoint, in order, nothing lost
    assert torch.equal(parts[0].q, d.split(sizes[0] / samples)[0].q)  # the fit part of the old 2-way split


@pytest.mark.parametrize("bad", [(0.5, 0.5), (0.5, 0.3, 0.3), (0.0, 0.5, 0.5), ("a", 0.5, 0.5), (1.2, -0.1, -0.1)])
def test_bad_splits_name_the_problem(bad):
    with pytest.raises(DataError, match="split"):
        check_split(bad)


def test_too_few_samples():
    with pytest.raises(DataError, match="at least 3 samples"):
        synthetic(samples=2, layers=1, heads=1, length=8, dim=4).split_three()
