"""Seeds of randomised configurations: record ids, and the records of one configuration grouped over seeds.

A randomised configuration (``Predictor.randomised``: its graphs depend on the seed) runs once per seed
of the profile; every other configuration runs once, with seed 0. Seed 0 is the reference: its record
keeps the id it had before seeds existed (``<dataset>--<backend>--<name>``), so earlier runs, committed
baselines and the reference report keep their ids; seed ``r > 0`` adds ``--seed<r>``. A record without
a ``seed`` field (an older run) is seed 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def seed_suffix(seed: int, sep: str = "--") -> str:
    """``""`` for seed 0, else ``f"{sep}seed{seed}"``: what a seed adds to an id."""
    return "" if int(seed) == 0 else f"{sep}seed{int(seed)}"


def record_id(dataset: str, backend: str, name: str, seed: int = 0) -> str:
    """A predictor record's id: ``<dataset>--<backend>--<name>``, then ``--seed<r>`` for seed ``r > 0``."""
    return f"{dataset}--{backend}--{name}{seed_suffix(seed)}"


def entry_seed(entry: dict) -> int:
    """The seed of a record or summary entry (0 when it has none: written before seeds were recorded)."""
    seed = entry.get("seed")
    return 0 if seed is None else int(seed)


def config_key(entry: dict) -> str:
    """The configuration of a summary entry, whatever its seed: ``<dataset>--<backend>--<name>``."""
    return record_id(entry["dataset"], entry["backend"], entry["name"])


def entry_key(entry: dict) -> str:
    """The key of one summary entry (one record): :func:`config_key` with the seed's suffix."""
    return record_id(entry["dataset"], entry["backend"], entry["name"], entry_seed(entry))


def group_seeds(entries: Iterable[dict]) -> dict[str, dict[int, dict]]:
    """``{config_key: {seed: entry}}`` of summary entries, configurations and seeds in sorted order."""
    out: dict[str, dict[int, dict]] = {}
    for e in entries:
        out.setdefault(config_key(e), {})[entry_seed(e)] = e
    return {k: dict(sorted(v.items())) for k, v in sorted(out.items())}


def mean_over_seeds(values: Sequence[float]) -> float:
    """The mean of one number per seed; with one seed, that number itself (bit for bit: no arithmetic).

    NaN when any seed's is NaN (a seed that lost its quality is not averaged away)."""
    if len(values) == 1:
        return values[0]
    vals = [math.nan if v is None else float(v) for v in values]
    return sum(vals) / len(vals)
