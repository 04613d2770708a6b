"""Typed benchmark profiles: bench/suite/profiles.toml read into frozen dataclasses, bad keys and types refused."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bench.config.profiles import DataOptions, Profile, load_profile, load_profiles
from bench.config.sweeps import PROFILES
from bench.errors import BenchError

SUITE_PROFILES = Path(__file__).resolve().parents[1] / "bench" / "suite" / "profiles.toml"
MINIMAL = """[tiny]
datasets = ["synthetic"]
data = { samples = 4, length = 32 }
rounds = 1
dense = ["softmax-sdpa"]
scaling_n = [64]
scaling_dense = ["softmax-sdpa"]
"""


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "profiles.toml"
    path.write_text(text)
    return path


def test_the_suite_profiles_load_typed_and_frozen():
    profiles = load_profiles(SUITE_PROFILES)
    assert tuple(profiles) == PROFILES + ("gpu",)  # the sweep profiles, then the GPU benchmarks' own
    smoke = profiles["smoke"]
    assert smoke.name == "smoke" and smoke.datasets == ("minilm",) and smoke.rounds == 2
    assert smoke.data == DataOptions(samples=8, length=128) and smoke.data.options() == {"samples": 8, "length": 128}
    assert smoke.scaling_dense_max == {"entmax-bisect": 128} and smoke.gold_n == (512,)
    assert smoke.downstream_predictors == "window-w3-g1,sf-kmeans-r4-k4-top1"
    assert profiles["default"].scaling_predictors is None  # derived from the registry
    assert profiles["full"].twin_predictors is None and profiles["full"].sparse_exec_goal_samples == 32
    with pytest.raises(dataclasses.FrozenInstanceError):
        smoke.rounds = 3
    with pytest.raises(TypeError):
        smoke.scaling_dense_max["entmax15-sort"] = 1


def test_defaults_of_optional_keys(tmp_path):
    p = load_profile(write(tmp_path, MINIMAL), "tiny")
    assert isinstance(p, Profile)
    assert (p.twin_predictors, p.scaling_predictors, p.gold_n, p.downstream_predictors) == (None, None, (), "")
    assert (p.downstream_rounds, p.sparse_exec_goal, p.sparse_exec_goal_length, p.sparse_exec_goal_samples) == \
        (1, None, 512, 16)
    assert dict(p.sparse_exec_dense_max) == {} and p.data.corpus is None


def test_a_list_of_downstream_globs_is_joined(tmp_path):
    p = load_profile(write(tmp_path, MINIMAL + 'downstream_predictors = ["window-*", "sf-*"]\n'), "tiny")
    assert p.downstream_predictors == "window-*,sf-*"


def test_a_misspelt_key_names_the_key_the_profile_and_the_likely_key(tmp_path):
    path = write(tmp_path, MINIMAL + 'scaling_predictor = ["window-w3"]\n')
    with pytest.raises(BenchError, match=r"profile 'tiny': unknown key 'scaling_predictor' "
                                         r"\(did you mean 'scaling_predictors'\?\)") as err:
        load_profile(path, "tiny")
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(BenchError, match=r"profile 'tiny': unknown key 'data.sample' \(did you mean 'data.samples'"):
        load_profile(write(tmp_path, MINIMAL.replace("samples = 4", "sample = 4")), "tiny")


@pytest.mark.parametrize("line, message", [
    ('rounds = "2"', "key 'rounds' must be an int, got str '2'"),
    ("rounds = true", "key 'rounds' must be an int, got bool True"),
    ('scaling_n = [64, "128"]', r"key 'scaling_n\[1\]' must be an int, got str '128'"),
    ('dense = "softmax-sdpa"', "key 'dense' must be a list of strs, got str 'softmax-sdpa'"),
    ('scaling_dense_max = { "entmax-bisect" = 1.5 }', r"key 'scaling_dense_max.entmax-bisect' must be an int"),
    ("data = 4", r"key 'data' must be a table \(DataOptions\), got int 4"),
])
def test_a_wrong_type_names_the_key_and_the_profile(tmp_path, line, message):
    key = line.split(" = ")[0]
    text = "\n".join(ln for ln in MINIMAL.splitlines() if not ln.startswith(key + " ")) + "\n" + line + "\n"
    with pytest.raises(BenchError, match=f"profile 'tiny': {message}"):
        load_profile(write(tmp_path, text), "tiny")


def test_missing_keys_unknown_profiles_and_bad_files(tmp_path):
    with pytest.raises(BenchError, match="profile 'tiny': missing key\\(s\\) rounds"):
        load_profile(write(tmp_path, MINIMAL.replace("rounds = 1\n", "")), "tiny")
    with pytest.raises(BenchError, match="unknown profile 'huge' in .*; known: tiny"):
        load_profile(write(tmp_path, MINIMAL), "huge")
    with pytest.raises(BenchError, match="is not valid TOML"):
        load_profile(write(tmp_path, "[tiny\n"), "tiny")
    with pytest.raises(BenchError, match="cannot read the profiles file"):
        load_profile(tmp_path / "absent.toml", "tiny")


def test_seeds_of_the_profiles_and_their_default(tmp_path):
    profiles = load_profiles(SUITE_PROFILES)
    assert [profiles[p].seeds for p in PROFILES] == [(0,), (0, 1), (0, 1, 2, 3, 4)]
    assert load_profile(write(tmp_path, MINIMAL), "tiny").seeds == (0,)
    assert load_profile(write(tmp_path, MINIMAL + "seeds = [3, 0]\n"), "tiny").seeds == (3, 0)


@pytest.mark.parametrize("line, message", [
    ("seeds = []", r"key 'seeds' must be a non-empty list of integers >= 0, got \[\]"),
    ("seeds = [0, -1]", r"key 'seeds' must be a non-empty list of integers >= 0, got \[0, -1\]"),
    ("seeds = [0, 1, 1]", r"key 'seeds' lists a seed twice: \[0, 1, 1\]"),
    ("seeds = [1, 2]", r"key 'seeds' must hold seed 0 \(the seed of every configuration that is not randomised\)"),
    ("seeds = [0, 1.5]", r"key 'seeds\[1\]' must be an int, got float 1.5"),
])
def test_bad_seeds_name_the_key_and_the_profile(tmp_path, line, message):
    with pytest.raises(BenchError, match=f"profile 'tiny': {message}"):
        load_profile(write(tmp_path, MINIMAL + line + "\n"), "tiny")


def test_the_seeds_option_overrides_the_profile(tmp_path):
    from bench.config.profiles import seeds_option

    p = load_profile(write(tmp_path, MINIMAL + "seeds = [0, 1, 2]\n"), "tiny")
    assert seeds_option(None, p) == (0, 1, 2) and seeds_option("0,7", p) == (0, 7)
    with pytest.raises(BenchError, match=r"--seeds must be integers, comma separated \(e.g. 0,1,2\), got '0,a'"):
        seeds_option("0,a", p)
    with pytest.raises(BenchError, match="--seeds must hold seed 0"):
        seeds_option("1,2", p)


def test_randomised_configurations_run_once_per_seed_the_others_once():
    from bench.config.sweeps import configuration_seeds, seeded_names
    from bench.results.seeds import record_id, seed_suffix

    assert configuration_seeds("reformer-raw-b4-h2", (0, 1, 2)) == (0, 1, 2)
    assert configuration_seeds("window-w3", (0, 1, 2)) == (0,)
    assert configuration_seeds("bigbird-r0", (0, 1)) == (0,) and configuration_seeds("bigbird-r1", (0, 1)) == (0, 1)
    assert configuration_seeds("routing-raw-k4", (0, 1), backend="faiss") == (0, 1)
    assert seeded_names(["window-w3", "sf-kmeans-r4-k4-top1", "oracle-topk-k4"], (0, 3)) == [
        ("window-w3", 0), ("sf-kmeans-r4-k4-top1", 0), ("sf-kmeans-r4-k4-top1", 3), ("oracle-topk-k4", 0)]
    # Seed 0 keeps the id records had before seeds existed; another seed adds its suffix.
    assert record_id("minilm", "torch", "sf-kmeans-r4-k4-top1") == "minilm--torch--sf-kmeans-r4-k4-top1"
    assert record_id("minilm", "faiss", "routing-raw-k4", 2) == "minilm--faiss--routing-raw-k4--seed2"
    assert (seed_suffix(0, "-"), seed_suffix(4, "-")) == ("", "-seed4")
