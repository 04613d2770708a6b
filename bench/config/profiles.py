"""Benchmark profiles as typed, frozen data: ``bench/suite/profiles.toml`` read into :class:`Profile`.

Every key of a profile table is a field of :class:`Profile` (its ``data`` table a :class:`DataOptions`);
the file's own comments say what each one means. A key that is not a field (a misspelling), a missing
required key or a value of the wrong type is a :class:`~bench.errors.BenchError` naming the file, the
profile and the key. Optional keys take the defaults below, which are what the suite assumed when the
profiles were plain dictionaries. Lists become tuples and tables read-only mappings.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bench.errors import BenchError


@dataclass(frozen=True)
class DataOptions:
    """Options passed to every attention source (``bench.data.sources.load_source``); unset: its default."""

    samples: int | None = None
    length: int | None = None
    corpus: str | None = None
    seed: int | None = None

    def options(self) -> dict:
        """The options that are set, as keywords."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def _empty() -> Mapping:
    return types.MappingProxyType({})


@dataclass(frozen=True)
class Profile:
    """One profile of ``profiles.toml`` (see the comments there); ``name`` is its table name."""

    name: str
    datasets: tuple[str, ...]
    data: DataOptions
    rounds: int
    dense: tuple[str, ...]
    scaling_n: tuple[int, ...]
    scaling_dense: tuple[str, ...]
    twin_predictors: tuple[str, ...] | None = None  # None: every configuration of the twin families
    gold_n: tuple[int, ...] = ()
    gold_memory_n: tuple[int, ...] = ()
    scaling_dense_max: Mapping[str, int] = field(default_factory=_empty)
    scaling_predictors: tuple[str, ...] | None = None  # None: one configuration per cheap family
    downstream_predictors: str = ""  # glob(s), comma separated (a TOML list is joined with commas)
    downstream_samples: int | None = None
    paper_helper: bool = False  # also run every learned, hashing and block configuration with w3-g1
    seeds: tuple[int, ...] = (0,)  # randomised configurations run once per seed, the others with seed 0
    downstream_rounds: int = 1
    sparse_exec_n: tuple[int, ...] = ()
    sparse_exec_predictors: tuple[str, ...] = ()
    sparse_exec_dense: tuple[str, ...] = ()
    sparse_exec_dense_max: Mapping[str, int] = field(default_factory=_empty)
    sparse_exec_goal: str | None = None
    sparse_exec_goal_n: int | None = None
    sparse_exec_goal_length: int = 512
    sparse_exec_goal_samples: int = 16
    # Sparse execution on real heads (bench_sparse_real.py): lengths per dataset, samples per length.
    sparse_exec_real_lengths: Mapping[str, tuple[int, ...]] = field(default_factory=_empty)
    sparse_exec_real_samples: int = 16
    # The GPU benchmarks (bench_gpu.py); empty gpu_n: none. ``device``: the --device the profile needs.
    device: str | None = None
    gpu_n: tuple[int, ...] = ()
    gpu_heads: int = 16
    gpu_head_dim: int = 64
    gpu_causal: bool = True
    gpu_dtypes: tuple[str, ...] = ("float16", "bfloat16")
    gpu_dense: tuple[str, ...] = ()
    gpu_dense_max: Mapping[str, int] = field(default_factory=_empty)
    gpu_predictors: tuple[str, ...] = ()
    gpu_twins: tuple[str, ...] = ()
    gpu_warmup_n: int = 1024
    gpu_quality_n: int = 4096
    # Who measures the predictor configurations when --engine is not given (bench.engine.ray_engine.choose_engine).
    engine: str = "serial"


# Keys whose TOML value may take a second, equivalent form.
_NORMALISE = {"downstream_predictors": lambda v: ",".join(v) if isinstance(v, list) else v}


def _describe(tp) -> str:
    """``tp`` in words, for error messages: "an int", "a list of strs", "a table of ints"."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is tuple:
        return f"a list of {_describe(args[0]).split()[-1]}s"
    if origin is Mapping:
        return f"a table of {_describe(args[1]).split()[-1]}s"
    if tp in (int, str, float, bool):
        return ("an " if tp is int else "a ") + tp.__name__
    return f"a table ({tp.__name__})"


def _convert(value, tp, where: str, key: str):
    """``value`` read from TOML as the field type ``tp``; a BenchError naming ``where`` and ``key`` otherwise."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):  # X | None: TOML has no null, only X comes
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp in (int, str) and isinstance(value, tp) and not isinstance(value, bool):
        return value
    if tp is bool and isinstance(value, bool):
        return value
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if origin is tuple and isinstance(value, list):
        return tuple(_convert(v, args[0], where, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is Mapping and isinstance(value, dict):
        return types.MappingProxyType({k: _convert(v, args[1], where, f"{key}.{k}") for k, v in value.items()})
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        return _build(tp, value, where, prefix=key + ".")
    raise BenchError(f"{where}: key {key!r} must be {_describe(tp)}, got {type(value).__name__} {value!r}")


def _build(cls, table: dict, where: str, prefix: str = "", **given):
    """``cls(**given, **table)`` with every key of ``table`` checked against the fields of ``cls``."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in given}
    values = dict(given)
    for key, value in table.items():
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" (did you mean {prefix + close[0]!r}?)" if close else ""
            raise BenchError(f"{where}: unknown key {prefix + key!r}{hint}; known: {', '.join(fields)}")
        value = _NORMALISE.get(key, lambda v: v)(value)
        values[key] = _convert(value, hints[key], where, prefix + key)
    missing = [k for k, f in fields.items() if k not in values
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise BenchError(f"{where}: missing key(s) {', '.join(prefix + k for k in missing)}")
    return cls(**values)


def load_profiles(path: Path) -> dict[str, Profile]:
    """Every profile of the TOML file ``path``, checked."""
    try:
        with open(path, "rb") as f:
            spec = tomllib.load(f)
    except OSError as exc:
        raise BenchError(f"cannot read the profiles file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise BenchError(f"profiles file {path} is not valid TOML: {exc}") from None
    out = {}
    for name, table in spec.items():
        where = f"{path}: profile {name!r}"
        if not isinstance(table, dict):
            raise BenchError(f"{where} must be a table, got {type(table).__name__}")
        out[name] = _build(Profile, table, where, name=name)
        _check_data(out[name].data, where)
        _check_gpu(out[name], where)
        _check_seeds(out[name].seeds, where)
    return out


def _check_data(data: DataOptions, where: str) -> None:
    """The profile's data options within the bounds of the command line (bench.data.sources.SAMPLES_RANGE...)."""
    from bench.data.sources import check_data_options

    try:
        check_data_options(data.samples, data.length, where="data.")
    except BenchError as exc:
        raise BenchError(f"{where}: {exc}") from None


GPU_DTYPES = ("float16", "bfloat16")
DEVICES = ("cpu", "cuda")
ENGINES = ("serial", "ray")


def _check_gpu(prof: Profile, where: str) -> None:
    """The GPU keys of a profile: known methods and dtypes, lengths AdaSplash can take (powers of two from
    64: it needs no padding mask then), a GPU benchmark only in a profile that asks for ``--device cuda``."""
    from bench.execution.gpu_attention import GPU_DENSE

    if prof.device is not None and prof.device not in DEVICES:
        raise BenchError(f"{where}: key 'device' must be one of {', '.join(DEVICES)}, got {prof.device!r}")
    if prof.engine not in ENGINES:
        raise BenchError(f"{where}: key 'engine' must be one of {', '.join(ENGINES)}, got {prof.engine!r}")
    if prof.gpu_n and prof.device != "cuda":
        raise BenchError(f"{where}: gpu_n is set, so the profile needs device = \"cuda\"")
    bad = [n for n in prof.gpu_n + (prof.gpu_warmup_n,) if n < 64 or n & (n - 1)]
    if bad:
        raise BenchError(f"{where}: gpu lengths must be powers of two >= 64 (AdaSplash's kernel), got {bad[0]}")
    for key, values, known in (("gpu_dtypes", prof.gpu_dtypes, GPU_DTYPES), ("gpu_dense", prof.gpu_dense, GPU_DENSE),
                               ("gpu_dense_max", tuple(prof.gpu_dense_max), GPU_DENSE)):
        unknown = [v for v in values if v not in known]
        if unknown:
            raise BenchError(f"{where}: {key} has {unknown[0]!r}; known: {', '.join(known)}")
    if prof.gpu_heads < 1 or prof.gpu_head_dim not in (16, 32, 64, 128, 256):
        raise BenchError(f"{where}: gpu_heads must be >= 1 and gpu_head_dim one of 16, 32, 64, 128, 256 "
                         f"(AdaSplash's head dimensions), got {prof.gpu_heads} and {prof.gpu_head_dim}")


def check_seeds(seeds, what: str = "seeds") -> tuple[int, ...]:
    """``seeds`` as a tuple when it is a list of distinct integers >= 0 that holds 0, else a BenchError.

    Seed 0 is the reference: every configuration that is not randomised runs with it, and its records keep
    the ids they had before seeds were added (``bench.results.seeds.record_id``).
    """
    out = tuple(seeds)
    bad = [s for s in out if isinstance(s, bool) or not isinstance(s, int) or s < 0]
    if bad or not out:
        raise BenchError(f"{what} must be a non-empty list of integers >= 0, got {list(out)}")
    if len(set(out)) != len(out):
        raise BenchError(f"{what} lists a seed twice: {list(out)}")
    if 0 not in out:
        raise BenchError(f"{what} must hold seed 0 (the seed of every configuration that is not randomised), "
                         f"got {list(out)}")
    return out


def seeds_option(text: str | None, profile: Profile) -> tuple[int, ...]:
    """The seeds of a run: ``--seeds 0,1,2`` (comma separated) when given, else the profile's."""
    if text is None:
        return profile.seeds
    try:
        seeds = [int(s) for s in text.split(",")]
    except ValueError:
        raise BenchError(f"--seeds must be integers, comma separated (e.g. 0,1,2), got {text!r}") from None
    return check_seeds(seeds, "--seeds")


def _check_seeds(seeds: tuple[int, ...], where: str) -> None:
    try:
        check_seeds(seeds, "key 'seeds'")
    except BenchError as exc:
        raise BenchError(f"{where}: {exc}") from None


def load_profile(path: Path, name: str) -> Profile:
    """The profile ``name`` of ``path`` (every profile of the file is checked)."""
    profiles = load_profiles(path)
    if name not in profiles:
        raise BenchError(f"unknown profile {name!r} in {path}; known: {', '.join(profiles)}")
    return profiles[name]
