"""The registry: families register themselves, are discovered on first use (never at import), have a
kind, and the lists the suite derives from them (twins, scaling) are what the profiles used to spell out."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import predictors
from bench.config.sweeps import family_configs, scaling_names, sweep_file
from predictors import registry
from predictors.base import Param, Predictor
from predictors.errors import PredictorError

ROOT = Path(__file__).resolve().parents[1]
# The scaling list that bench/suite/profiles.toml spelt out for the default and full profiles before it was
# derived from the registry (one configuration per family that is not a ceiling).
OLD_SCALING = {"window-w11-g1", "sf-dist-r4-t1", "sf-quant-r4-b8", "sf-kmeans-r4-k16-top1", "reformer-raw-b8-h2",
               "routing-raw-k8", "bigbird-r3-w3-g2", "longformer-n2-w11", "fixed-l16-c4", "simhash-b8-l4-h0-top0",
               "hashattn-b32-h4-top0", "xattention-b8-st4-t0.5", "minference-lq64-v4-sl8", "seer-b16-top2-t0",
               "quest-block-b16-k2"}


@pytest.fixture
def scratch_registry(monkeypatch):
    """A copy of the registry's tables for the test; the real ones are untouched afterwards."""
    registry.discover()
    monkeypatch.setattr(registry, "_TABLES", {b: dict(t) for b, t in registry._TABLES.items()})
    monkeypatch.setattr(registry, "_EXTRAS_FOUND", set(registry._EXTRAS_FOUND))
    added = set(sys.modules)
    yield registry
    for name in set(sys.modules) - added:
        if name.startswith("mine_"):
            del sys.modules[name]


@pytest.mark.slow
def test_importing_predictors_imports_no_family_module_and_discovery_no_faiss():
    code = textwrap.dedent("""
        import sys, predictors
        loaded = sorted(m for m in sys.modules if m.startswith(("predictors.torch", "predictors.faiss")))
        assert not loaded and "faiss" not in sys.modules, loaded
        predictors.families()
        assert "predictors.torch.oracle" in sys.modules and "predictors.faiss.simhash" in sys.modules
        assert "faiss" not in sys.modules, "discovery imported faiss"
    """)
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_every_module_of_the_family_packages_is_registered():
    fams = registry.families()
    assert {registry.family_class(f).__module__.split(".")[-1] for f in fams} == {
        p.stem for p in (ROOT / "predictors" / "torch").glob("*.py") if p.stem != "__init__"}
    assert registry.families("faiss") == ["reformer", "routing", "sf-kmeans", "simhash"]
    assert registry.unavailable() == {}


def test_kinds_are_documented_and_block_families_name_their_tile():
    for fam in registry.families():
        cls = registry.family_class(fam)
        assert cls.kind in registry.KINDS, fam
        assert cls.block_param is None or cls.kind == "block", fam
        assert (cls.kind == "ceiling") == fam.startswith("oracle-"), fam
        if fam in registry.families("faiss"):
            assert registry.family_class(fam, "faiss").kind == cls.kind


def test_unknown_names_and_missing_twins_list_what_exists():
    with pytest.raises(PredictorError, match=r"unknown predictor 'nope-k3' for backend torch; known families: .*win"):
        predictors.get("nope-k3")
    with pytest.raises(PredictorError, match=r"no FAISS twin of bigbird; families with a twin: reformer, routing, "
                                             r"sf-kmeans, simhash"):
        predictors.get("bigbird-r3-w3-g2", backend="faiss")
    with pytest.raises(PredictorError, match="no FAISS twin of window"):
        registry.family_class("window", "faiss")
    with pytest.raises(PredictorError, match="unknown backend 'tpu'"):
        registry.families("tpu")


def _family(name="mine", kind="fixed", **attrs):
    return type("Mine", (Predictor,), {"family": name, "kind": kind, "__module__": "mine_module", **attrs})


def test_register_checks_the_class(scratch_registry):
    with pytest.raises(PredictorError, match="kind 'clever'; known: fixed, hashing, learned, block, ceiling"):
        registry.register(_family(kind="clever"))
    with pytest.raises(PredictorError, match="no usable family name"):
        registry.register(_family(name=""))
    with pytest.raises(PredictorError, match="block_param 'b' is not one of its parameters"):
        registry.register(_family(kind="block", block_param="b"))
    with pytest.raises(PredictorError, match="registered twice: by predictors.torch.window.WindowOnly"):
        registry.register(_family(name="window"))
    with pytest.raises(PredictorError, match="FAISS twin .* of 'mine', which is no registered torch family"):
        registry.register(_family(backend="faiss"))
    with pytest.raises(PredictorError, match="not a predictors.base.Predictor subclass"):
        registry.register(type("Plain", (), {"family": "plain", "kind": "fixed"}))
    cls = registry.register(_family(params=(Param("k", "k", int, 2),)))
    assert registry.family_class("mine") is cls and predictors.get("mine-k5").name == "mine-k5"
    assert "mine" in registry.families() and "mine" not in registry.families("faiss")


def test_a_module_named_in_the_environment_is_discovered_with_its_sweep(scratch_registry, tmp_path, monkeypatch):
    (tmp_path / "mine_family.py").write_text(textwrap.dedent("""
        from predictors.base import Param, Predictor
        from predictors.registry import register

        @register
        class Mine(Predictor):
            family = "mine"
            kind = "fixed"
            params = (Param("k", "k", int, 2),)
    """))
    (tmp_path / "mine.toml").write_text('[smoke]\ngrid = { k = [1, 2] }\n[scaling]\nk = 3\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(registry.FAMILIES_ENV, " mine_family , ")
    assert "mine" in registry.families()
    assert sweep_file("mine") == tmp_path / "mine.toml"
    assert [predictors.get("mine", **c).name for c in family_configs("mine", "smoke")] == ["mine-k1", "mine-k2"]
    assert "mine-k3" in scaling_names("default")
    monkeypatch.setenv(registry.FAMILIES_ENV, "mine_family,mine_missing")
    with pytest.raises(PredictorError, match="SPARSEBENCH_FAMILIES names the module 'mine_missing', which cannot "
                                             "be imported: ModuleNotFoundError"):
        registry.families()


def test_every_cheap_family_declares_its_scaling_configuration():
    for fam in registry.families():
        if registry.family_class(fam).kind != "ceiling":
            assert "[scaling]" in sweep_file(fam).read_text(), fam


@pytest.mark.parametrize("profile", ["default", "full"])
def test_derived_scaling_list_is_the_list_the_profiles_spelt_out(profile):
    names = scaling_names(profile)
    assert len(names) == len(set(names)) and set(names) == OLD_SCALING
    assert scaling_names(profile, listed=("window-w3",)) == ["window-w3"]


# -- canonical names: one spelling per configuration -----------------------------------------------------------
def _listed_names(prof) -> set[str]:
    """The predictor names a profile spells out (globs without wildcards are names too)."""
    names = set(prof.twin_predictors or ()) | set(prof.scaling_predictors or ()) | set(prof.sparse_exec_predictors)
    names |= {n.strip() for n in prof.downstream_predictors.split(",") if n.strip() and "*" not in n}
    return names | ({prof.sparse_exec_goal} if prof.sparse_exec_goal else set())


@pytest.mark.parametrize("profile", ["smoke", "default", "full"])
def test_every_sweep_and_profile_name_round_trips(profile):
    from bench.config.profiles import load_profile
    from bench.config.sweeps import PAPER_HELPER, sweep_names

    prof = load_profile(ROOT / "bench" / "suite" / "profiles.toml", profile)
    names = [(b, n) for b in registry.BACKENDS for n in sweep_names(profile, backend=b, helpers=(PAPER_HELPER,))]
    names += [("torch", n) for n in scaling_names(profile) + sorted(_listed_names(prof))]
    assert len(names) > 20
    for backend, name in names:
        family, values = predictors.parse_name(name, backend)
        assert registry.canonical_name(name, backend) == name
        assert registry.family_class(family, backend)(**values).name == name, (backend, name)


def test_names_of_the_baselines_and_the_committed_reference_round_trip():
    import csv
    import gzip
    import json

    names = set()
    for key in json.loads((ROOT / "reports" / "baselines" / "smoke.json").read_text())["entries"]:
        _, backend, name = key.split("--")
        names.add((backend, name))
    with gzip.open(ROOT / "reports" / "reference" / "results.csv.gz", "rt") as f:  # kept compressed
        names |= {(row["backend"], row["name"]) for row in csv.DictReader(f)}
    summary = json.loads((ROOT / "reports" / "reference" / "summary.json").read_text())
    names |= {(r.get("backend", "torch"), r["name"]) for r in summary["predictors"] + summary["downstream"]}
    names |= {(r["backend"], r["method"]) for r in summary["scaling"] if r["backend"] != "dense"}
    names = {(b, n) for b, n in names if registry.family_of(n, "torch") is not None}  # not the dense references
    assert len(names) > 100
    for backend, name in sorted(names):
        assert predictors.get(name, backend=backend).name == name, (backend, name)


@pytest.mark.parametrize("name, message", [
    ("sf-kmeans-k4-k8", "parameter k is given twice (k4, k8)"),
    ("reformer-raw-proj-b8", "parameter space is given twice (raw, proj)"),
    ("window-w3-w3", "parameter w is given twice"),
    ("window-w011", "did you mean window-w11?"),
    ("window-w+3", "did you mean window-w3?"),
    ("window-w\u0663", "did you mean window-w3?"),  # an Arabic-Indic digit three
    ("window-w\uff13", "did you mean window-w3?"),  # a fullwidth digit three
    ("window-w1_1", "did you mean window-w11?"),
    ("window-w0", "did you mean window?"),
    ("sf-dist-r4-t1.50", "did you mean sf-dist-r4-t1.5?"),
    ("sf-dist-r4-t1e0", "did you mean sf-dist-r4-t1?"),
    ("sf-kmeans-k8-r4", "did you mean sf-kmeans-r4-k8?"),
    ("sf-kmeans-r4-sep-k16", "did you mean sf-kmeans-r4-k16?"),
    ("sf-dist-r4-sp0.9123456", "cannot be written exactly in a name (it would read sp0.912346)"),
    ("sf-dist-r4-tinf", "t=inf must be a finite number"),
    ("sf-dist-r4-tnan", "t=nan must be a finite number"),
    ("seer-b16-top1-tnan", "t=nan must be a finite number"),
])
def test_names_have_one_spelling(name, message):
    with pytest.raises(PredictorError) as info:
        predictors.get(name)
    assert message in str(info.value)


def test_partial_and_family_names_stay_readable():
    assert predictors.get("sf-kmeans").name == "sf-kmeans-r4-k16-top1"
    assert predictors.get("sf-kmeans-k8").name == "sf-kmeans-r4-k8-top1"
    assert registry.canonical_name("sf-kmeans-k8") == "sf-kmeans-k8"
    assert predictors.get("seer-b64-top0", t=0.5).name == "seer-b64-top0-t0.5"  # keywords complete a name
