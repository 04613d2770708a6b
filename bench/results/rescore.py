"""Metrics after the run: recompute every predictor record's quality numbers from its stored graphs.

The benchmark keeps each configuration's eval graphs beside its record
(:mod:`bench.results.graph_store`). :func:`rescore_run` rebuilds, per record, the eval data and gold
from the record's dataset and descriptor (:func:`bench.evaluation.prepared.prepare`, the gold from the
verified cache), checks that the rebuilt data is the recorded data (descriptor, sample counts and the
eval digest stored with the graphs), reads the graphs back and scores them again with
:func:`bench.evaluation.score.score_graphs`, the benchmark's own scoring. The fresh numbers (every key of
:data:`~bench.evaluation.score.QUALITY_KEYS`) are compared with the stored ones leaf by leaf, exactly
(``repr`` of each number, after the same JSON round trip: NaN is null); with ``write=True`` differing
records get the fresh numbers (atomically) and the run's summary is rebuilt.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.errors import BenchError
from bench.results.graph_store import graphs_path, read_graphs
from bench.results.records import json_safe, read_record, run_dir, write_json_atomic


@dataclass
class Rescore:
    """What :func:`rescore_run` found: record ids (file stems) by outcome.

    ``same``: bit-identical; ``differ``: id -> the differing fields (``mean.recall``,
    ``per_head.recall[2][5]``...); ``missing``: no graphs file; ``failed``: id -> why it could not be
    rescored; ``written``: records rewritten with the fresh numbers (``write=True``).
    """

    run: Path
    same: list[str] = field(default_factory=list)
    differ: dict[str, list[str]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    written: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every record rescored, and each one matched or was rewritten."""
        return not self.missing and not self.failed and set(self.differ) <= set(self.written)


def run_folder(run: str | Path) -> Path:
    """A run folder from a path, or from a run name under ``$SPARSEBENCH_REPORTS/runs``.

    Raises BenchError (one line) when there is no such folder or it holds no ``records/``.
    """
    path = Path(run)
    if not path.exists() and "/" not in str(run) and run_dir(str(run)).exists():
        path = run_dir(str(run))
    if not path.exists():
        raise BenchError(f"no such run folder: {run}")
    if not path.is_dir() or not (path / "records").is_dir():
        raise BenchError(f"{run} is not a run folder (no records/ folder in it)")
    return path


def rescore_run(run: str | Path, write: bool = False, block: int = 256,
                progress: Callable[[str, str], None] | None = None) -> Rescore:
    """Rescore every predictor record of ``run`` (see the module docstring).

    ``block``: query rows per scoring block, as the benchmark scored them. ``progress(rid, outcome)`` is
    called after each record (outcome ``same``, ``differ``, ``missing`` or ``failed``).
    """
    from bench.results.summary import write_summary

    out = Rescore(run_folder(run))
    prepared: dict = {}  # the last dataset rebuilt: records of one dataset are adjacent (sorted ids)
    for path in sorted((out.run / "records" / "predictor").glob("*.json")):
        rid = path.name.removesuffix(".json")
        outcome = _rescore_one(path, rid, out, prepared, write, block)
        if progress is not None:
            progress(rid, outcome)
    if write:
        write_summary(out.run)
    return out


def _rescore_one(path: Path, rid: str, out: Rescore, prepared: dict, write: bool, block: int) -> str:
    if not graphs_path(path).is_file():
        out.missing.append(rid)
        return "missing"
    try:
        rec = _read_record(path)
        fresh = _normalised(fresh_quality(rec, graphs_path(path), prepared, block))
    except BenchError as exc:
        out.failed[rid] = str(exc)
        return "failed"
    diffs = [d for key in fresh for d in differences(rec.get(key), fresh[key], key)]
    if not diffs:
        out.same.append(rid)
        return "same"
    out.differ[rid] = diffs
    if write:
        write_json_atomic(path, {**rec, **fresh})
        out.written.append(rid)
    return "differ"


def _read_record(path: Path) -> dict:
    """The verified record (checksum, schema, ranges: :func:`bench.results.records.read_record`)."""
    return read_record(path, "predictor")


def fresh_quality(rec: dict, graphs_file: Path, prepared: dict, block: int = 256) -> dict:
    """The quality numbers of record ``rec`` scored again from ``graphs_file`` (see the module docstring).

    ``prepared``: a one-entry cache of the rebuilt dataset, shared between calls.
    """
    from bench.evaluation.score import score_graphs, tile_size
    from predictors.registry import family_class

    prep = _prepared(rec, prepared)
    graphs = read_graphs(graphs_file, prep.eval)
    if len(graphs) != prep.eval.num_layers:
        raise BenchError(f"{graphs_file.name} holds {len(graphs)} layers, the data {prep.eval.num_layers}")
    tile = tile_size(family_class(rec["family"], rec["backend"]).block_param, rec["params"])
    return score_graphs(prep, graphs, tile=tile, block=block)


def _prepared(rec: dict, cache: dict):
    from bench.data.sources import source_options
    from bench.evaluation.prepared import prepare
    from predictors.data import DEFAULT_SPLIT

    dataset, descriptor = rec["dataset"], rec.get("dataset_descriptor")
    if descriptor is None:
        raise BenchError("the record has no dataset_descriptor: its data cannot be rebuilt")
    key = json.dumps([dataset, descriptor, rec.get("split")], sort_keys=True)
    if key not in cache:
        cache.clear()
        try:
            split = rec.get("split") or DEFAULT_SPLIT  # the record's split (records before it: the default)
            cache[key] = prepare(dataset, split=split, **source_options(dataset, descriptor))
        except BenchError as exc:
            cache[key] = exc
    prep = cache[key]
    if isinstance(prep, BenchError):
        raise BenchError(f"dataset {dataset} cannot be rebuilt: {prep}")
    if _normalised(prep.data.descriptor) != _normalised(descriptor):
        raise BenchError(f"dataset {dataset} rebuilt from the record's options has another descriptor")
    counts = (prep.eval.num_samples, prep.fit.num_samples)
    if counts != (rec.get("eval_samples"), rec.get("fit_samples")):
        raise BenchError(f"dataset {dataset} splits into {counts} eval/fit samples, the record "
                         f"{(rec.get('eval_samples'), rec.get('fit_samples'))}")
    return prep


def _normalised(obj):
    # What the record file holds: the same JSON round trip (NaN as null, tuples as lists, sorted keys).
    return json.loads(json.dumps(json_safe(obj), sort_keys=True, default=str))


def differences(stored, fresh, path: str) -> list[str]:
    """Dotted paths where ``stored`` and ``fresh`` (JSON values) differ; numbers compared by ``repr``."""
    if isinstance(stored, dict) and isinstance(fresh, dict):
        return [d for k in sorted(set(stored) | set(fresh))
                for d in differences(stored.get(k), fresh.get(k), f"{path}.{k}")]
    if isinstance(stored, list) and isinstance(fresh, list) and len(stored) == len(fresh):
        return [d for i, (a, b) in enumerate(zip(stored, fresh)) for d in differences(a, b, f"{path}[{i}]")]
    # repr tells -0.0 from 0.0 and 1 from 1.0: bit-identical means the same JSON text.
    return [] if type(stored) is type(fresh) and repr(stored) == repr(fresh) else [path]


def report_lines(result: Rescore, write: bool, limit: int = 5) -> list[str]:
    """The lines ``sparsebench rescore`` prints: one per record that is not bit-identical, then a total."""
    lines = []
    for rid, diffs in result.differ.items():
        more = f" and {len(diffs) - limit} more" if len(diffs) > limit else ""
        verb = "rewritten" if rid in result.written else "DIFFERS"
        lines.append(f"{verb}: {rid}: {', '.join(diffs[:limit])}{more}")
    lines += [f"no graphs file: {rid} (nothing to rescore)" for rid in result.missing]
    lines += [f"FAILED: {rid}: {why}" for rid, why in result.failed.items()]
    total = len(result.same) + len(result.differ) + len(result.missing) + len(result.failed)
    lines.append(f"{'rescored' if result.ok else 'FAILED'}: {total} predictor records in {result.run}: "
                 f"{len(result.same)} bit-identical, {len(result.differ)} differ"
                 + (f" ({len(result.written)} rewritten, summary rebuilt)" if write else "")
                 + f", {len(result.missing)} without graphs, {len(result.failed)} failed")
    return lines
