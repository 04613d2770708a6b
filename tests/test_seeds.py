"""Which families are randomised: a family declaring ``randomised`` gives other graphs for another seed on
some data, and a family that does not gives the same graphs for every seed (its output is no function of
the seed, so the suite runs it once)."""

from __future__ import annotations

import pytest
import torch

import predictors
from bench.config.sweeps import configuration_name, family_configs
from bench.evaluation.prepared import prepare
from predictors.registry import families, family_class

# The families whose graphs depend on the seed, and why (each one's fit or predict draws from it).
RANDOMISED = {
    "sf-dist": "projections", "sf-quant": "projections", "sf-kmeans": "projections and k-means++",
    "reformer": "rotations", "routing": "k-means++", "simhash": "hyperplanes", "hashattn": "training",
    "seer": "training", "bigbird": "random keys (r > 0)",
}


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


BACKENDS = ["torch", "faiss"] if faiss_available() else ["torch"]
SLOW = ("hashattn",)  # trains its bits for about 10 s here
CASES = [pytest.param(b, f, id=f"{b}-{f}", marks=[pytest.mark.slow] if f in SLOW else [])
         for b in BACKENDS for f in families(b)]


@pytest.fixture(scope="module")
def prep():
    return prepare("synthetic", samples=4, length=96, use_cache=False)  # eval: one sample of 75 tokens


def graphs_of(name: str, backend: str, seed: int, prep) -> list[torch.Tensor]:
    """The whole ``[H, n, n]`` mask of every eval sample and layer of ``name`` fitted with ``seed``."""
    p = predictors.get(name, backend=backend, seed=seed).fit(prep.fit, prep.fit_gold)
    out = []
    for layer in range(prep.eval.num_layers):
        view = prep.eval.layer(layer)
        graph = p.predict(view, layer)
        out += [graph.block_mask(s, 0, int(n), int(n)) for s, n in enumerate(view.lengths)]
    return out


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def smoke_names(family: str, backend: str) -> list[str]:
    """The smoke configurations of a family (its first two), with the paper's helper on the first."""
    configs = family_configs(family, "smoke")[:2]
    names = [configuration_name(family, c, backend) for c in configs]
    return names + [configuration_name(family, {**configs[0], "w": 3, "g": 1}, backend)]


def test_the_declared_families_are_the_ones_listed_here():
    declared = {f for f in families() if family_class(f).randomised}
    assert declared == set(RANDOMISED)
    for f in families("faiss"):  # a twin is what its torch family is
        assert family_class(f, "faiss").randomised == family_class(f).randomised


@pytest.mark.parametrize("backend, family", CASES)
def test_two_seeds_give_other_graphs_exactly_for_randomised_families(prep, backend, family):
    for name in smoke_names(family, backend):
        randomised = predictors.get(name, backend=backend).randomised
        assert randomised == (family in RANDOMISED), name
        a, b = graphs_of(name, backend, 0, prep), graphs_of(name, backend, 1, prep)
        assert same(a, graphs_of(name, backend, 0, prep)), f"{name}: one seed, two graphs"
        agree = same(a, b)
        assert agree != randomised, f"{name}: randomised={randomised}, seeds 0 and 1 {'agree' if agree else 'differ'}"


def test_bigbird_without_random_keys_is_not_randomised(prep):
    assert predictors.get("bigbird-r1").randomised and not predictors.get("bigbird-r0").randomised
    assert same(graphs_of("bigbird-r0", "torch", 0, prep), graphs_of("bigbird-r0", "torch", 5, prep))
    assert not same(graphs_of("bigbird-r2", "torch", 0, prep), graphs_of("bigbird-r2", "torch", 5, prep))
