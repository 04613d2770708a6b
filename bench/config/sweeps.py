"""Sweeps are data: ``predictors/sweeps/<family>.toml`` lists each family's configurations.

Each file has one table per profile, ``[smoke]`` (CI), ``[default]`` (what ``tox -e bench`` runs) and
``[full]`` (the paper's grid); a profile holds ``grid``, an inline table of parameter lists whose
cartesian product is the set of configurations (or ``grids``, a list of such tables, whose
configurations are concatenated). Names come from the predictors themselves, so they are exactly the
ids used everywhere else.
"""

from __future__ import annotations

import fnmatch
import itertools
import tomllib
from pathlib import Path

from bench.errors import BenchError

SWEEP_DIR = Path(__file__).resolve().parents[2] / "predictors" / "sweeps"
PROFILES = ("smoke", "default", "full")


def sweep_file(family: str) -> Path:
    return SWEEP_DIR / f"{family}.toml"


def family_configs(family: str, profile: str) -> list[dict]:
    """Parameter dicts of one family's profile, in file order (cartesian product of each grid)."""
    if profile not in PROFILES:
        raise BenchError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")
    path = sweep_file(family)
    if not path.is_file():
        raise BenchError(f"no sweep file for family {family!r} ({path})")
    with open(path, "rb") as f:
        try:
            spec = tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise BenchError(f"sweep file {path} is not valid TOML: {exc}") from None
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


def sweep_names(profile: str, families=None, pattern: str | None = None, backend: str = "torch") -> list[str]:
    """Predictor names of a profile across families, filtered by a glob ``pattern`` (or several, comma
    separated); duplicates (the same configuration reached twice) are dropped."""
    import predictors
    from predictors.registry import families as all_families

    fams = families or [f for f in all_families(backend) if sweep_file(f).is_file()]
    names: list[str] = []
    for fam in fams:
        for params in family_configs(fam, profile):
            name = predictors.get(fam, backend=backend, **params).name
            if name not in names:
                names.append(name)
    return filter_names(names, pattern)
