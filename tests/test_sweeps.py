import pytest

from bench.config.sweeps import PROFILES, family_configs, sweep_file, sweep_names
from bench.errors import BenchError
from predictors.registry import families, get


@pytest.mark.parametrize("family", families())
def test_every_family_has_a_sweep_with_every_profile(family):
    assert sweep_file(family).is_file()
    for profile in PROFILES:
        configs = family_configs(family, profile)
        assert configs, f"{family} has no {profile} configurations"
        for params in configs:
            p = get(family, **params)
            assert get(p.name).name == p.name  # names round-trip


def test_smoke_is_smaller_than_default_and_full():
    smoke, default, full = (len(sweep_names(p)) for p in PROFILES)
    assert smoke < default < full


def test_pattern_filter_and_unknown_profile():
    names = sweep_names("smoke", pattern="window*, fixed*")
    assert names and all(n.startswith(("window", "fixed")) for n in names)
    with pytest.raises(BenchError, match="unknown profile 'huge'"):
        family_configs("window", "huge")


def test_filter_names_by_comma_separated_globs():
    from bench.config.sweeps import filter_names

    names = ["sf-kmeans-r4-k4-top1", "window-w3", "window-w3-g1", "routing-raw-k4"]
    assert filter_names(names, None) == names and filter_names(names, "") == names
    assert filter_names(names, "window*") == ["window-w3", "window-w3-g1"]
    assert filter_names(names, " sf-* , *-k4") == ["sf-kmeans-r4-k4-top1", "routing-raw-k4"]
    assert filter_names(names, ",") == [] and filter_names(names, "nothing*") == []


def test_family_of_takes_the_longest_family_prefix_per_backend():
    from predictors.registry import family_of

    assert family_of("sf-kmeans-r4-k8-top1") == "sf-kmeans" == family_of("sf-kmeans-r4-k8-top1", "faiss")
    assert family_of("oracle-margin-sp0.9") == "oracle-margin"
    assert family_of("window") == "window" and family_of("windows-w3") is None
    assert family_of("bigbird-r3-w3-g2", "faiss") is None and family_of("nothing-k4") is None
