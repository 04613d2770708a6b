"""``sparsebench``: the command line of the suite.

    sparsebench data inspect SOURCE_OR_FILE [--json]     gold sparsity per layer and head
    sparsebench data export SOURCE FILE                  write a source in the external format (a bare
                                                         file name goes to reports/exports/)
    sparsebench capture MODEL OUT.safetensors            your own transformers model's Q/K/V on a corpus
    sparsebench list [--json]                            registered predictor families, kinds, parameters
    sparsebench score --dataset D --predictor NAME ...   fit on fit samples, metrics on eval samples
                                                         (--engine ray [--address A]: as Ray tasks)
    sparsebench compare RUN --baseline FILE              regression gates against a baseline
    sparsebench rescore RUN [--write]                    recompute a run's metrics from its stored graphs
    sparsebench report RUN                               render the trade-off report of a run

Bad input ends with one line ``sparsebench: error: ...`` and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

from bench.errors import BenchError
from bench.results.records import json_safe


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors on one line (``sparsebench ...: error: ...``, exit 2), like every other error."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--corpus", help="text corpus: fortunes-bsd (the default), fortunes, kjv, pydoc or file:PATH")
    p.add_argument("--samples", type=int, help="number of text samples")
    p.add_argument("--length", type=int, help="maximum tokens per sample")
    p.add_argument("--seed", type=int, help="data seed")
    p.add_argument("--threads", type=int, help="torch threads (default 1, see bench/env.py)")


def _source_options(args) -> dict:
    return {"corpus": args.corpus, "samples": args.samples, "length": args.length, "seed": args.seed}


# Commands that read or write the cache (gold graphs, trained models): its folder is checked first.
_CACHED = ("inspect", "score", "rescore")


def check_options(args) -> None:
    """Every option with bounds checked before any work (a BenchError naming the first bad one): threads,
    data samples and length (a split needs 3 samples; inspect, export and capture split nothing), the split, the
    cache folder of the commands that cache, the file that ``data export`` writes."""
    from bench.data.atomic import writable
    from bench.data.cache import cache_root
    from bench.data.sources import check_data_options
    from bench.env import check_threads

    command = getattr(args, "data_command", None) or args.command
    if hasattr(args, "threads"):
        check_threads(args.threads)
    if hasattr(args, "samples"):
        unsplit = command in ("inspect", "export", "capture")
        check_data_options(args.samples, args.length, min_samples=1 if unsplit else None)
    if getattr(args, "split", None) is not None:
        from predictors.data import check_split

        args.split = check_split(args.split.split(","))
    if command in _CACHED:
        writable(cache_root(), "cache folder")
    if hasattr(args, "engine"):
        from bench.engine.ray_engine import check_engine

        check_engine(args.engine, args.address)
    if command == "export":
        _check_output_file(Path(args.file), "data export", "data.safetensors")
    if command == "compare" and args.update:
        _check_output_file(Path(args.baseline), "compare --update", "smoke.json")
    if command == "compare" and args.no_intervals and not args.update:
        raise BenchError("compare: --no-intervals says how --update writes a baseline; without --update the "
                         "gate reads the baseline's intervals as they are")
    if command == "rescore" and args.write:
        from bench.results.rescore import run_folder

        writable(run_folder(args.run), "rescore --write: the run folder")


def _check_output_file(path: Path, what: str, example: str) -> None:
    """A BenchError unless ``path`` can be written as a file: not a folder, its folder writable."""
    from bench.data.atomic import writable

    if path.is_dir():
        raise BenchError(f"{what}: {path} is a folder; give the file to write (e.g. {path / example})")
    if path.exists() and not path.is_file():
        raise BenchError(f"{what}: {path} exists and is not a regular file")
    writable(path.parent, f"{what}: the folder")


def _json_default(o):
    return str(o)


def _print_table(title: str, rows: list[list[float]]) -> None:
    print(title)
    heads = len(rows[0]) if rows else 0
    print("layer " + " ".join(f"{'h' + str(h):>6}" for h in range(heads)) + "   mean")
    for i, row in enumerate(rows):
        vals = [v for v in row if not math.isnan(v)]
        mean = sum(vals) / len(vals) if vals else float("nan")
        print(f"{i:>5} " + " ".join(f"{v:6.3f}" for v in row) + f" {mean:6.3f}")


def cmd_inspect(args) -> int:
    from bench.data.sources import load_source
    from bench.evaluation.prepared import load_gold

    start = time.perf_counter()
    data = load_source(args.source, show_progress=not args.json, **_source_options(args))
    load_seconds = time.perf_counter() - start
    start = time.perf_counter()
    gold, from_cache = load_gold(data, show_progress=not args.json)
    gold_wall = time.perf_counter() - start
    sp = gold.sparsity()
    per_head = sp.tolist()
    result = {"name": data.name, "descriptor": data.descriptor, "shape": list(data.q.shape),
              "causal": data.causal, "alpha": data.alpha, "scale": data.scale,
              "lengths": data.lengths.tolist(), "per_head": per_head, "mean": sp.mean().item(),
              "load_seconds": load_seconds, "gold_seconds": gold.seconds, "gold_from_cache": from_cache,
              "gold_wall_seconds": gold_wall}
    if args.json:
        print(json.dumps(json_safe(result), default=_json_default))
        return 0
    s, nl, h, t, d = data.q.shape
    print(f"{data.name}: {s} samples x {nl} layers x {h} heads (kv heads {data.num_kv_heads}), "
          f"T={t}, D={d}, {'causal' if data.causal else 'bidirectional'}, alpha={data.alpha}")
    print("descriptor: " + json.dumps(data.descriptor, default=_json_default))
    _print_table("gold sparsity (share of valid pairs with zero entmax weight), mean over samples:", per_head)
    # Say where the gold came from: a cached entry's seconds are those of the run that computed it.
    gold_note = (f"gold read from the cache in {gold_wall:.1f} s (computed in {gold.seconds:.1f} s when cached)"
                 if from_cache else f"gold computed in {gold.seconds:.1f} s (cached for later runs)")
    print(f"mean gold sparsity {result['mean']:.4f}; data loaded in {load_seconds:.1f} s; {gold_note}")
    d = data.descriptor
    if "heldout_cosine" in d:  # a fine-tuned encoder (minilm-entmax): is it still the encoder it was?
        print(f"held-out sentence embeddings ({d['heldout_texts']} texts never trained on): cosine "
              f"{d['heldout_cosine']:.4f} to the original softmax model's ({d['heldout_cosine_untuned']:.4f} with "
              f"entmax swapped in untrained); entmax sparsity there {d['heldout_sparsity_mean']:.4f}")
    return 0


def export_path(file: str) -> Path:
    """Where ``sparsebench data export SOURCE FILE`` writes: ``FILE`` when it names a folder
    (``./out.safetensors``, ``/tmp/x.safetensors``), else ``reports/exports/FILE`` (ignored by git, so a
    bare file name never drops a large file into the checkout). A folder, or a name ending in a
    separator, is an error."""
    from bench.results.records import reports_root

    if not file or file.endswith(("/", os.sep)):
        raise BenchError(f"data export: {file!r} names a folder; give a file name, e.g. minilm.safetensors")
    path = Path(file) if "/" in file or os.sep in file else reports_root() / "exports" / file
    if path.is_dir():
        raise BenchError(f"data export: {path} is a folder; give a file name, e.g. {path / 'data.safetensors'}")
    if path.parent.exists() and not path.parent.is_dir():
        raise BenchError(f"data export: {path.parent} is not a folder")
    return path


def cmd_export(args) -> int:
    from bench.data.external import write_external
    from bench.data.sources import load_source

    path = export_path(args.file)  # before loading: a bad target fails fast
    data = load_source(args.source, show_progress=True, **_source_options(args))
    path.parent.mkdir(parents=True, exist_ok=True)
    path = write_external(data, path)
    size = path.stat().st_size / 2**20
    print(f"wrote {data.name} {tuple(data.q.shape)} to {path} ({size:.1f} MB); "
          f"benchmark it with --dataset file:{path}")
    return 0


def cmd_capture(args) -> int:
    from bench.data.capture import capture_to_file

    data, path, seconds = capture_to_file(
        args.out, model=args.model, corpus=args.corpus, samples=args.samples, length=args.length,
        layers=args.layers, dtype=args.dtype, seed=args.seed, batch=args.batch, device=args.device,
        show_progress=True)
    s, nl, h, t, d = data.q.shape
    print(f"wrote {data.name}: {s} samples x {nl} layers ({data.descriptor['layers']}) x {h} heads "
          f"(kv heads {data.num_kv_heads}), T={t}, D={d}, {'causal' if data.causal else 'bidirectional'}, "
          f"scale={data.scale:.6g}, {args.dtype}, to {path} in {seconds:.1f} s")
    return 0


def _add_capture_parser(sub) -> None:
    p = sub.add_parser("capture", help="run a local transformers model on a corpus, write its Q/K/V (external format)",
                       description="Run a local Hugging Face transformers model (a model directory, a .gguf file "
                       "or an installed package carrying one; never a download) on a corpus and write the queries, "
                       "keys and values its attention uses in the external format.")
    p.add_argument("model", help="model directory, .gguf file, or installed package carrying a model")
    p.add_argument("out", help="output file (.safetensors)")
    p.add_argument("--corpus", help="text corpus: fortunes-bsd (default), fortunes, kjv, pydoc or file:PATH")
    p.add_argument("--samples", type=int, default=16, help="number of text samples (default 16)")
    p.add_argument("--length", type=int, default=256, help="maximum tokens per sample (default 256)")
    p.add_argument("--layers", help="layers to keep, e.g. 0,2,5 (default all)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"),
                   help="stored dtype (the model runs in float32)")
    p.add_argument("--seed", type=int, default=0, help="data seed (default 0)")
    p.add_argument("--batch", type=int, default=8, help="samples per forward pass (default 8)")
    p.add_argument("--device", default="cpu", help="torch device the model runs on (default cpu)")
    p.add_argument("--threads", type=int, help="torch threads (default 1, see bench/env.py)")
    p.set_defaults(func=cmd_capture)


def cmd_list(args) -> int:
    from predictors.registry import KINDS, families, family_class, unavailable

    twins = set(families("faiss"))
    out = []
    for fam in families("torch"):
        cls = family_class(fam)
        params = [{"key": p.key, "prefix": p.prefix, "type": p.type.__name__, "default": p.default,
                   "choices": list(p.choices) if p.choices else None, "doc": p.doc} for p in cls.all_params()]
        out.append({"family": fam, "kind": cls.kind, "faiss_twin": fam in twins, "module": cls.__module__,
                    "example": cls().name, "doc": (cls.__doc__ or "").strip().split("\n")[0], "params": params})
    # A module that cannot be imported here (an optional dependency): its families are unknown.
    out += [{"family": None, "module": m, "error": e} for m, e in unavailable().items()]
    if args.json:
        print(json.dumps(out))
        return 0
    print("kinds of family:")
    for kind, doc in KINDS.items():
        print(f"    {kind:<8} {doc}")
    for item in out:
        if "error" in item:
            print(f"{item['module']}: unavailable ({item['error']})")
            continue
        twin = ", FAISS twin" if item["faiss_twin"] else ""
        print(f"{item['family']} [{item['kind']}{twin}]: {item['doc']}")
        print(f"    e.g. {item['example']}")
        for p in item["params"]:
            choices = f" in {p['choices']}" if p["choices"] else ""
            print(f"    {p['key']:<8} name prefix {p['prefix']!r:<6} {p['type']:<5} default {p['default']}{choices}"
                  + (f"  {p['doc']}" if p["doc"] else ""))
    return 0


def cmd_score(args) -> int:
    import predictors
    from bench.engine.measure import Case
    from bench.engine.scoring import score_cases
    from bench.evaluation.prepared import prepare

    for name in args.predictor:  # every name checked before the data is prepared
        predictors.get(name, backend=args.backend, seed=args.predictor_seed)
    cases = [Case(args.dataset, args.backend, name) for name in args.predictor]
    split = {} if args.split is None else {"split": args.split}
    prep = prepare(args.dataset, show_progress=not args.json, **split, **_source_options(args))

    def show(rec: dict) -> None:
        if not args.json:
            print(f"\n== {rec['name']} on {prep.data.name} (fit {len(prep.fit.lengths)} samples, "
                  f"eval {len(prep.eval.lengths)} samples; fit {rec['fit_seconds']:.2f} s)")
            for m in ("recall", "sparsity"):
                _print_table(f"{m} per layer and head:", rec["per_head"][m])
            print("means: " + ", ".join(f"{k} {v:.4f}" for k, v in rec["mean"].items()))

    records, failed = score_cases(prep, cases, show, engine=args.engine, address=args.address,
                                  threads=args.threads, seed=args.predictor_seed, show_progress=not args.json)
    if args.json:
        print(json.dumps(json_safe(records), default=_json_default))
    for case, why in failed.items():
        print(f"sparsebench: error: {case.name} failed on ray: {why}", file=sys.stderr)
    return 1 if failed else 0


COMPARE_EXIT = """exit status:
  0  the gate passed: every configuration of the baseline is in the run and none regressed
  1  a regression: a gated metric worse than its tolerance, a configuration slower than its limit,
     or a configuration of the baseline missing from the run
  2  bad input or usage: no run summary, a malformed baseline (unknown metric, NaN or null, wrong
     types, no entries), a baseline made for another run (its fingerprint: profile, datasets,
     corpus and its hash, data options, split; what differs is named), a gate that would check no
     configuration, or a gated metric or speed reference the run lacks
"""


def cmd_compare(args) -> int:
    from bench.results.gates import checked_keys, compare, load_baseline, load_json, make_baseline
    from bench.results.records import write_json_atomic

    run = Path(args.run)
    summary = load_json(run / "summary.json" if run.is_dir() else run, "run summary", strict=False)
    if args.update:
        base = make_baseline(summary, intervals=not args.no_intervals)
        write_json_atomic(Path(args.baseline), base)
        with_iv = sum(1 for e in base["entries"].values() if e.get("intervals"))
        print(f"wrote baseline {args.baseline} from {run} ({len(base['entries'])} configurations, "
              f"{with_iv} with intervals)")
        return 0
    baseline = load_baseline(Path(args.baseline))
    failures, notes = compare(summary, baseline, check_speed=not args.no_speed)
    for line in notes:
        print(f"note: {line}")
    for line in failures:
        print(f"FAIL: {line}")
    checked = len(checked_keys(summary, baseline))
    gated = ", ".join(baseline["quality"]) + ("" if args.no_speed else ", speed")
    fp = baseline["fingerprint"]
    with_iv = sum(1 for e in baseline["entries"].values() if e.get("intervals"))
    widened = f"; {with_iv} with the baseline's intervals as tolerances" if with_iv else ""
    print(f"{'FAILED' if failures else 'passed'}: {checked} of {len(baseline['entries'])} configurations "
          f"({gated}) against {args.baseline} (profile {fp['profile']}, datasets "
          f"{', '.join(fp['datasets']) or 'none'}), {len(failures)} regression(s){widened}")
    return 1 if failures else 0


def cmd_rescore(args) -> int:
    from bench.results.rescore import report_lines, rescore_run

    progress = None if args.quiet else lambda rid, outcome: print(f"  {outcome:<7} {rid}", flush=True)
    result = rescore_run(args.run, write=args.write, progress=progress)
    for line in report_lines(result, args.write):
        print(line)
    return 0 if result.ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sparsebench", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    data = sub.add_parser("data", help="attention data: inspect and export")
    dsub = data.add_subparsers(dest="data_command", required=True)
    p = dsub.add_parser("inspect", help="gold sparsity per layer and head")
    p.add_argument("source", help="minilm, entmax-lm, minilm-entmax, synthetic or file:PATH")
    p.add_argument("--json", action="store_true")
    _add_data_options(p)
    p.set_defaults(func=cmd_inspect)
    p = dsub.add_parser("export", help="write a source in the external safetensors format")
    p.add_argument("source")
    p.add_argument("file", help="output file; a bare name (out.safetensors) goes to reports/exports/ (git-ignored)")
    _add_data_options(p)
    p.set_defaults(func=cmd_export)
    _add_capture_parser(sub)
    p = sub.add_parser("list", help="registered predictors and their parameters")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("score", help="fit predictors on fit samples and score them on eval samples")
    p.add_argument("--dataset", required=True, help="minilm, entmax-lm, minilm-entmax, synthetic or file:PATH")
    p.add_argument("--predictor", action="append", required=True, help="predictor name (repeatable)")
    p.add_argument("--backend", default="torch", choices=("torch", "faiss"))
    p.add_argument("--predictor-seed", type=int, default=0)
    p.add_argument("--split", help="fit,val,eval fractions of the samples (default 0.5,0.25,0.25)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--engine", default="serial", choices=("serial", "ray"),
                   help="score the predictors one after the other here (serial), or as Ray tasks (ray)")
    p.add_argument("--address", help="--engine ray: join the Ray cluster at auto or HOST:PORT (default: start "
                   "Ray here, one worker per core)")
    _add_data_options(p)
    p.set_defaults(func=cmd_score)
    p = sub.add_parser("compare", help="regression gates: a run against a committed baseline",
                       description="Regression gates: the quality and speed of a run's configurations "
                       "against a committed baseline made from a matching run.",
                       epilog=COMPARE_EXIT, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a run folder (reports/runs/NAME) or its summary.json")
    p.add_argument("--baseline", required=True, help="baseline JSON (e.g. reports/baselines/smoke.json)")
    p.add_argument("--update", action="store_true",
                   help="write the baseline from this run instead (with the run's fingerprint; per configuration "
                   "the means over its seeds and, where the run has per-sample values, their 95%% bootstrap "
                   "intervals over eval samples and seeds, which the gate then uses as tolerances)")
    p.add_argument("--no-intervals", action="store_true",
                   help="with --update: write no intervals (every metric gated by its tolerance alone)")
    p.add_argument("--no-speed", action="store_true", help="check quality only")
    p.set_defaults(func=cmd_compare)
    p = sub.add_parser("rescore", help="recompute every predictor record's metrics from its stored graphs")
    p.add_argument("run", help="a run folder (reports/runs/NAME) or a run name")
    p.add_argument("--write", action="store_true", help="replace differing numbers and rebuild the summary")
    p.add_argument("--quiet", action="store_true", help="no line per record, only the differences and a total")
    p.set_defaults(func=cmd_rescore)
    from bench.report.cli import add_report_parser

    add_report_parser(sub)
    return parser


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    """Warnings as one line each (the suite's own, such as a cache entry rebuilt, say what happened)."""
    kind = "" if category is UserWarning else f"{category.__name__}: "
    text = " ".join(str(message).split())
    print(f"sparsebench: warning: {kind}{text}", file=sys.stderr if file is None else file)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from bench.env import configure_threads

    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warning  # a rebuilt cache entry says so in one line
        try:
            check_options(args)
            configure_threads(getattr(args, "threads", None))
            return args.func(args)
        except BenchError as exc:
            print(f"sparsebench: error: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:  # a file or folder the checks could not foresee (removed, full disk): name it
            where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f) or "a file"
            print(f"sparsebench: error: {where}: {exc.strerror or exc}", file=sys.stderr)
            return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
