"""Sweeps are data: ``predictors/sweeps/<family>.toml`` lists each family's configurations.

Each file has one table per profile, ``[smoke]`` (CI), ``[default]`` (what ``tox -e bench`` runs) and
``[full]`` (the paper's grid); a profile holds ``grid``, an inline table of parameter lists whose
cartesian product is the set of configurations (or ``grids``, a list of such tables, whose
configurations are concatenated). Names come from the predictors themselves, so they are exactly the
ids used everywhere else. An optional ``[scaling]`` table holds the one configuration the scaling sweep
times for the family when a profile lists none (:func:`scaling_names`).

A family outside ``predictors/`` (a module named in ``SPARSEBENCH_FAMILIES``) keeps its sweep in
``<family>.toml`` beside its module (:func:`sweep_file`).
"""

from __future__ import annotations

import fnmatch
import itertools
import sys
import tomllib
from pathlib import Path

from bench.errors import BenchError

SWEEP_DIR = Path(__file__).resolve().parents[2] / "predictors" / "sweeps"
PROFILES = ("smoke", "default", "full")


def sweep_file(family: str) -> Path:
    """``predictors/sweeps/<family>.toml``; failing that, ``<family>.toml`` beside the module that registers
    the family (a family of one's own); the first path when neither exists."""
    builtin = SWEEP_DIR / f"{family}.toml"
    if builtin.is_file():
        return builtin
    from predictors.registry import family_class

    try:
        module = sys.modules[family_class(family).__module__]
    except (BenchError, KeyError):
        return builtin
    beside = Path(module.__file__).with_name(f"{family}.toml") if getattr(module, "__file__", None) else None
    return beside if beside is not None and beside.is_file() else builtin


def _sweep_spec(family: str) -> tuple[Path, dict]:
    path = sweep_file(family)
    if not path.is_file():
        raise BenchError(f"no sweep file for family {family!r} ({path})")
    with open(path, "rb") as f:
        try:
            return path, tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise BenchError(f"sweep file {path} is not valid TOML: {exc}") from None


def family_configs(family: str, profile: str) -> list[dict]:
    """Parameter dicts of one family's profile, in file order (cartesian product of each grid)."""
    if profile not in PROFILES:
        raise BenchError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")
    _, spec = _sweep_spec(family)
    table = spec.get(profile)
    if table is None:
        return []
    grids = table.get("grids") or [table.get("grid", {})]
    configs = []
    for grid in grids:
        keys = list(grid)
        for values in itertools.product(*(grid[k] if isinstance(grid[k], list) else [grid[k]] for k in keys)):
            configs.append(dict(zip(keys, values)))
    return configs


def filter_names(names, pattern: str | None) -> list[str]:
    """``names`` matching any glob of ``pattern`` (several comma separated); all of them without one."""
    if not pattern:
        return list(names)
    pats = [p.strip() for p in pattern.split(",") if p.strip()]
    return [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in pats)]


# The paper's helper: a window of 3 and the first token (Treviso et al. combine every predictor with them).
PAPER_HELPER = {"w": 3, "g": 1}
# Kinds whose configurations are also run with the helper (fixed patterns and ceilings are run as listed:
# fixed patterns are windows and global tokens themselves, ceilings are bounds).
HELPED_KINDS = ("learned", "hashing", "block")


def sweep_names(profile: str, families=None, pattern: str | None = None, backend: str = "torch",
                helpers: tuple[dict, ...] = ()) -> list[str]:
    """Predictor names of a profile across families, filtered by a glob ``pattern`` (or several, comma
    separated); duplicates (the same configuration reached twice) are dropped.

    ``helpers``: extra parameters (e.g. :data:`PAPER_HELPER`) with which every configuration of a family of
    a :data:`HELPED_KINDS` kind is run too, right after the bare one, so every such family is measured bare
    and with the same helpers (a configuration that already sets one of them is left as it is).
    """
    from predictors.registry import families as all_families
    from predictors.registry import family_class

    fams = families or [f for f in all_families(backend) if sweep_file(f).is_file()]
    names: list[str] = []
    for fam in fams:
        helped = family_class(fam, backend).kind in HELPED_KINDS
        for params in family_configs(fam, profile):
            variants = [params] + [{**params, **h} for h in helpers
                                   if helped and not any(params.get(k) for k in h)]
            for values in variants:
                name = configuration_name(fam, values, backend)
                if name not in names:
                    names.append(name)
    return filter_names(names, pattern)


def scaling_names(profile: str, listed=None) -> list[str]:
    """The scaling sweep's predictor names: ``listed`` when the profile lists them, else one configuration
    per registered family that is not a ceiling (ceilings cost the dense scores by construction), in family
    order: its sweep file's ``[scaling]`` table, or the first configuration of ``profile`` without one."""
    if listed is not None:
        return list(listed)
    from predictors.registry import families, family_class

    names = []
    for fam in families():
        if family_class(fam).kind == "ceiling" or not sweep_file(fam).is_file():
            continue
        path, spec = _sweep_spec(fam)
        params = spec.get("scaling")
        if params is None:
            first = family_configs(fam, profile)[:1]
            params = first[0] if first else None
        if params is None:
            continue
        if not isinstance(params, dict):
            raise BenchError(f"sweep file {path}: [scaling] must be a table of parameter values")
        names.append(configuration_name(fam, params))
    return names


def configuration_name(family: str, values: dict, backend: str = "torch") -> str:
    """The name of ``family`` with the parameter ``values`` of a sweep file; a BenchError naming the file when
    that name does not read back as the same configuration (a value with more than six significant digits:
    results would be filed under a name that means another configuration)."""
    import predictors

    predictor = predictors.get(family, backend=backend, **values)
    name = predictor.name
    try:
        same = predictors.get(name, backend=backend).values == predictor.values
    except BenchError as exc:
        raise BenchError(f"sweep file {sweep_file(family)}: {values} is named {name}, which does not read back "
                         f"({exc})") from None
    if not same:
        raise BenchError(f"sweep file {sweep_file(family)}: {values} is named {name}, which reads back as other "
                         "values (names keep six significant digits)")
    return name


def configuration_seeds(name: str, seeds, backend: str = "torch") -> tuple[int, ...]:
    """The seeds configuration ``name`` runs with: every one of ``seeds`` (a profile's, checked by
    :func:`bench.config.profiles.check_seeds`) when its graphs depend on the seed
    (``Predictor.randomised``), else seed 0 alone (the same graphs whatever the seed)."""
    import predictors

    return tuple(seeds) if predictors.get(name, backend=backend).randomised else (0,)


def seeded_names(names, seeds, backend: str = "torch") -> list[tuple[str, int]]:
    """``(name, seed)`` of every configuration of ``names`` and each of its :func:`configuration_seeds`,
    the seeds of one configuration together, in the order of ``seeds``."""
    return [(n, s) for n in names for s in configuration_seeds(n, seeds, backend)]
