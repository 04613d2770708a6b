"""Trade-off reports of a finished run: notebooks executed with papermill, HTML without code, PNG figures.

The command line (what is rendered: :mod:`bench.report.render`)::

    python -m bench.report RUN_DIR [--out DIR] [--dataset D] [--x sparsity] [--y recall] [--predictor NAME]
    python -m bench.report --bench-args [ARGS...]    the run that ``pytest -c bench/suite/pytest.ini bench/suite ARGS``
                                                      wrote (``tox -e bench`` ends with this)

and ``sparsebench report`` (:func:`add_report_parser`).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench.errors import BenchError
from bench.report.render import render


def run_from_bench_args(argv: Sequence[str]) -> Path:
    """The run folder that ``pytest -c bench/suite/pytest.ini bench/suite ARGV`` writes: ``--run``, else a
    folder named after the file datasets of ``--dataset`` (``file-NAME``), else ``--profile``, else
    ``default`` (as in bench/suite/conftest.py), under :func:`bench.results.records.run_dir`."""
    from bench.data.sources import dataset_id
    from bench.results.records import run_dir

    found: dict = {}
    it = iter(argv)
    for arg in it:
        for opt in ("--run", "--profile", "--dataset"):
            if arg == opt:
                found[opt] = next(it, None)
            elif arg.startswith(opt + "="):
                found[opt] = arg.split("=", 1)[1]
    datasets = [d.strip() for d in (found.get("--dataset") or "").split(",") if d.strip()]
    files = "-".join(dataset_id(d) for d in datasets if d.startswith("file:"))
    name = found.get("--run") or files or found.get("--profile") or "default"
    return run_dir(name)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", nargs="?", help="run folder (reports/runs/NAME) with summary.json and results.csv")
    p.add_argument("--out", help="output folder (default: RUN/report)")
    p.add_argument("--dataset", help="show only this dataset (default: every dataset of the run)")
    p.add_argument("--x", dest="x_metric", help="x metric of the headline trade-off (default sparsity)")
    p.add_argument("--y", dest="y_metric", help="y metric of the headline trade-off (default recall)")
    p.add_argument("--predictor", help="configuration of the per-head recall grid (default: best at 0.9)")
    p.add_argument("--bench-args", nargs=argparse.REMAINDER, default=None,
                   help="instead of RUN: the arguments given to the benchmark suite (tox -e bench -- ARGS)")


def cmd_report(args) -> int:
    """Render the report of ``args.run``; prints where it went. For ``sparsebench report``."""
    if args.bench_args is not None:
        run = run_from_bench_args(args.bench_args)
    elif args.run:
        run = Path(args.run)
    else:
        raise BenchError("give a run folder (reports/runs/NAME) or --bench-args")
    params = {k: getattr(args, k) for k in ("dataset", "x_metric", "y_metric", "predictor") if getattr(args, k)}
    start = time.perf_counter()
    paths = render(run, args.out, parameters=params)
    html = [p for p in paths if p.suffix == ".html"]
    print(f"report of {run} rendered in {time.perf_counter() - start:.1f} s: {len(paths)} files in {paths[0].parent}")
    for p in html + [p for p in paths if p.name == "README.md"]:
        print(f"  {p}")
    return 0


def add_report_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``report`` to a ``sparsebench`` subparsers object (sets ``func=cmd_report``)."""
    p = subparsers.add_parser("report", help="render a run's trade-off report (HTML, PNG, Markdown)")
    add_arguments(p)
    p.set_defaults(func=cmd_report)
    return p


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.split("\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return cmd_report(args)
    except BenchError as exc:
        print(f"sparsebench: error: {exc}", file=sys.stderr)
        return 2


