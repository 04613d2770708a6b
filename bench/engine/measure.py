"""One predictor configuration measured: fit, timed prediction of every eval layer, quality on the
eval and validation samples; the record and the graphs that were scored.

:func:`measure_predictor` is the one code path of a quality measurement, whoever runs it: the serial
benchmark (``bench/suite/bench_predictors.py``, timing with pytest-benchmark: :func:`pedantic_timer`)
and a Ray task (:func:`measure_together`: the predictions of a few configurations timed in alternation
with the dense reference on the same worker). Both fit with :func:`fit_case` and score with
:func:`finish_case`: only the timing differs, never the numbers of quality.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass

import predictors
from bench.data.sources import dataset_id
from bench.evaluation.prepared import Prepared
from bench.evaluation.score import score_fitted
from bench.execution.timing import sync
from bench.progress import Step
from bench.results.seeds import record_id, seed_suffix

LONG_FIT = 5.0  # seconds: a fit at least this long leaves a line on the console

#: ``timer(predict, rounds=, warmup=, views=)`` -> timing statistics of ``predict()`` (``mean``, ``median``,
#: ``min``, ``stddev``, ``rounds``, and whatever else the timer records: the machine, a reference).
Timer = Callable[..., dict]


@dataclass(frozen=True, order=True)
class Case:
    """One configuration of a sweep: a predictor ``name`` on ``backend``, on ``dataset``, with ``seed``
    (0 unless the family is randomised and the profile runs several seeds)."""

    dataset: str
    backend: str
    name: str
    seed: int = 0

    @property
    def rid(self) -> str:
        """Its record's id: ``<dataset id>--<backend>--<name>``, ``--seed<r>`` for seed ``r > 0``
        (:func:`bench.results.seeds.record_id`)."""
        return record_id(dataset_id(self.dataset), self.backend, self.name, self.seed)

    def label(self) -> str:
        """How the console names it: ``minilm-torch-window-w11-g1`` (the suite's test id), ``-seed1``..."""
        return f"{self.dataset}-{self.backend}-{self.name}{seed_suffix(self.seed, '-')}"


@dataclass
class Measured:
    """A configuration's record (everything but its fingerprint) and its eval graphs, one per layer."""

    record: dict
    graphs: list


def rounds_of(predictor, rounds: int) -> tuple[int, int]:
    """``(timed rounds, warm-up rounds)``: a ceiling reads the dense scores, so its time says nothing a
    reader compares and one round without warm-up suffices; the profile's ``rounds`` after one warm-up
    otherwise."""
    return (1, 0) if predictor.kind == "ceiling" else (rounds, 1)


@dataclass
class Fitted:
    """A configuration fitted and ready to time: ``predict()`` predicts every eval layer (``views``) and
    keeps the graphs of its last call in ``last["graphs"]``; ``rounds``, ``warmup``: :func:`rounds_of`."""

    case: Case
    predictor: object
    views: list
    predict: Callable[[], list]
    last: dict
    rounds: int
    warmup: int


def fit_case(prep: Prepared, case: Case, rounds: int, device: str) -> Fitted:
    """Fit ``case``'s predictor (with its seed) on ``prep.fit``: the untimed part of a measurement."""
    predictor = predictors.get(case.name, backend=case.backend, seed=case.seed)
    with Step(f"fit {case.name}", quiet_below=LONG_FIT):  # on the console only when it takes a while
        predictor.fit(prep.fit, prep.fit_gold)
    views = [prep.eval.layer(layer) for layer in range(prep.eval.num_layers)]
    last: dict = {}

    def predict_all_layers():
        graphs = [predictor.predict(view, layer) for layer, view in enumerate(views)]
        sync(device)
        last["graphs"] = graphs  # scored afterwards: the timed prediction is not repeated
        return graphs

    return Fitted(case, predictor, views, predict_all_layers, last, *rounds_of(predictor, rounds))


def finish_case(prep: Prepared, fitted: Fitted, timing: dict, device: str, environment: dict) -> Measured:
    """Score the graphs of ``fitted``'s last timed round on the eval samples, predict and score the
    validation samples, and make the record with ``timing`` (see :func:`measure_predictor`)."""
    predictor, case = fitted.predictor, fitted.case
    rec = score_fitted(prep, predictor, graphs=fitted.last["graphs"])
    # Configurations are chosen on the validation samples and reported on the eval samples.
    val = score_fitted(prep, predictor, part="val")
    rec["val"] = {"mean": val["mean"], "per_sample": val["per_sample"], "samples": prep.val.num_samples}
    rec["predict_seconds"] = timing["mean"]
    heads = prep.eval.num_layers * prep.eval.num_heads
    rec.update({
        "kind": "predictor", "dataset": case.dataset, "dataset_descriptor": prep.data.descriptor,
        "device": device, "eval_samples": prep.eval.num_samples, "fit_samples": prep.fit.num_samples,
        "split": list(prep.split), "val_samples": prep.val.num_samples, "variant": predictor.variant,
        "layers": prep.eval.num_layers, "heads": prep.eval.num_heads, "family_kind": predictor.kind,
        "time": per_head(timing, heads),
        "gold_sparsity": prep.eval_gold.sparsity().mean().item(),
        "environment": environment,
    })
    return Measured(rec, fitted.last["graphs"])


def measure_predictor(prep: Prepared, case: Case, *, rounds: int, device: str, timer: Timer,
                      environment: dict) -> Measured:
    """Fit ``case``'s predictor (with its seed) on ``prep.fit``, time its prediction of every eval layer with
    ``timer`` (:func:`rounds_of`), score the graphs of the last timed round on the eval samples and
    predict and score the validation samples.

    Returns
    -------
    :class:`Measured`: the predictor record of ``case`` (the fields of
    :func:`bench.evaluation.score.score_fitted`, ``val``, ``time`` with ``per_head_mean`` and the host,
    the data's sizes and descriptor, ``environment``) and its graphs.
    """
    fitted = fit_case(prep, case, rounds, device)
    timing = timer(fitted.predict, rounds=fitted.rounds, warmup=fitted.warmup, views=fitted.views)
    return finish_case(prep, fitted, timing, device, environment)


def per_head(timing: dict, heads: int) -> dict:
    """``timing`` with ``per_head_mean`` (mean / heads), in its references too."""
    out = {**timing, "per_head_mean": timing["mean"] / heads}
    if "reference" in timing:
        out["reference"] = {m: per_head(t, heads) for m, t in timing["reference"].items()}
    return out


def pedantic_timer(benchmark) -> Timer:
    """The serial benchmark's timer: pytest-benchmark's ``pedantic`` rounds on the driver's machine."""
    from bench.execution.timing import time_record

    def timer(predict, rounds: int, warmup: int, views) -> dict:
        benchmark.pedantic(predict, rounds=rounds, warmup_rounds=warmup, iterations=1)
        return {**time_record(benchmark), "engine": "serial", "host": socket.gethostname()}

    return timer


def measure_together(prep: Prepared, cases: list[Case], *, rounds: int, device: str, reference: str,
                     where: dict, environment: dict) -> list[Measured]:
    """A worker's measurement of ``cases`` (one timing class: :func:`rounds_of` alike): each fitted, their
    predictions timed in alternation with the dense ``reference`` (the probabilities of every eval layer,
    as ``bench_dense.py`` times it) on this worker in this task
    (:func:`bench.execution.timing.time_together`), then each scored. Every record's ``time`` carries the
    reference's timing (``reference``), ``engine: ray`` and ``where`` (the worker's ``host``, ``node_id``)."""
    from bench.execution.dense import dense_layer
    from bench.execution.timing import time_together

    fitted = [fit_case(prep, c, rounds, device) for c in cases]
    if len({(f.rounds, f.warmup) for f in fitted}) > 1:
        raise ValueError("configurations timed together need the same rounds (ceilings apart)")

    def dense():
        for view in fitted[0].views:
            dense_layer(view, reference)

    mine, ref = time_together([f.predict for f in fitted], dense, rounds=fitted[0].rounds,
                              warmup=fitted[0].warmup, device=device)
    return [finish_case(prep, f, {**t, "engine": "ray", **where, "reference": {reference: ref}}, device, environment)
            for f, t in zip(fitted, mine)]


def extra_info(rec: dict) -> dict:
    """pytest-benchmark's ``extra_info`` of a predictor record: numbers and names only."""
    return {"kind": "predictor", "dataset": rec["dataset"], "method": rec["name"], "family": rec["family"],
            "backend": rec["backend"], "device": rec["device"], "seed": rec.get("seed", 0),
            **{f"param_{k}": v for k, v in rec["params"].items()}, **rec["mean"],
            "prediction_flops": rec["prediction_flops"], "attention_flops": rec["attention_flops"],
            "dense_flops": rec["dense_flops"], "fit_seconds": rec["fit_seconds"]}


def score_case(prep: Prepared, case: Case, seed: int | None = None) -> dict:
    """``sparsebench score``'s record of ``case``: fit on the fit samples, quality on the eval samples
    (:func:`bench.evaluation.score.score_predictor`), with the dataset's descriptor as ``dataset``."""
    from bench.evaluation.score import score_predictor

    seed = case.seed if seed is None else seed
    rec = score_predictor(prep, predictors.get(case.name, backend=case.backend, seed=seed))
    rec["dataset"] = prep.data.descriptor
    return rec
