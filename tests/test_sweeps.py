import pytest

from bench.errors import BenchError
from bench.sweeps import PROFILES, family_configs, sweep_file, sweep_names
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
    from bench.sweeps import filter_names

    names = ["sf-kmeans-r4-k4-top1", "window-w3", "window-w3-g1", "routing-raw-k4"]
    assert filter_names(names, None) == names and filter_names(names, "") == names
    assert filter_names(names, "window*") == ["window-w3", "window-w3-g1"]
    assert filter_names(names, " sf-* , *-k4") == ["sf-kmeans-r4-k4-top1", "routing-raw-k4"]
    assert filter_names(names, ",") == [] and filter_names(names, "nothing*") == []
