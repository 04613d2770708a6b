"""The registry of attention sources.

``load_source(name, ...)`` returns an :class:`AttentionData`:

* ``minilm``: the pretrained MiniLM-L6 encoder (bidirectional), see :mod:`bench.data.minilm`;
* ``entmax-lm``: a small causal byte-level LM trained here with 1.5-entmax attention,
  see :mod:`bench.data.entmax_lm`;
* ``minilm-entmax``: MiniLM with 1.5-entmax attention, fine-tuned here by self-distillation to the
  original (bidirectional), see :mod:`bench.data.minilm_entmax`;
* ``synthetic``: seeded data for tests, see :mod:`bench.data.synthetic`;
* ``file:PATH``: the external safetensors format, see :mod:`bench.data.external`.

``dataset_id(name)`` is the file-name-safe id of a dataset name. The gold graph of a dataset and its
fit/eval split live in :mod:`bench.evaluation.prepared`.
"""

from __future__ import annotations

import inspect
import re

import torch

from bench.errors import DataError
from predictors.data import AttentionData

SOURCES = ("minilm", "entmax-lm", "minilm-entmax", "synthetic")
# Bounds of the data options at the edges (command line, profiles): a split needs a sample per part, and
# beyond these the data would not fit in memory here long before anything useful was measured. Each
# source may narrow them (minilm and minilm-entmax read at most 512 tokens, entmax-lm its context).
SAMPLES_RANGE = (3, 10_000)
LENGTH_RANGE = (2, 65_536)


def check_data_options(samples: int | None = None, length: int | None = None, min_samples: int | None = None,
                       where: str = "--") -> None:
    """A DataError unless ``samples`` and ``length`` (each ``None``: the source's default) are whole numbers in
    :data:`SAMPLES_RANGE` and :data:`LENGTH_RANGE`; ``min_samples`` lowers the least sample count where
    nothing is split (``sparsebench data inspect`` and ``export``). ``where`` prefixes the option names."""
    low = SAMPLES_RANGE[0] if min_samples is None else min_samples
    why = " (the fit, validation and eval parts need one each)" if low >= 3 else ""
    _check_whole(f"{where}samples", samples, low, SAMPLES_RANGE[1], why)
    _check_whole(f"{where}length", length, *LENGTH_RANGE, " (tokens per sample)")


def _check_whole(what: str, value, low: int, high: int, why: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise DataError(f"{what} must be a whole number in {low}..{high}{why}, got {value!r}")


def known_sources() -> list[str]:
    return list(SOURCES) + ["file:PATH"]


def _loader(name: str):
    if name == "minilm":
        from bench.data.minilm import minilm_data

        return minilm_data
    if name == "entmax-lm":
        from bench.data.entmax_lm import entmax_lm_data

        return entmax_lm_data
    if name == "minilm-entmax":
        from bench.data.minilm_entmax import minilm_entmax_data

        return minilm_entmax_data
    if name == "synthetic":
        from bench.data.synthetic import synthetic

        return synthetic
    raise DataError(f"unknown source {name!r}; known sources: {', '.join(known_sources())}")


def load_source(name: str, show_progress: bool = False, **options) -> AttentionData:
    """Load a source by name with its options (``corpus``, ``samples``, ``length``, ``seed``...).

    Options a source does not take are an error, not silently ignored; ``None`` values are dropped.
    """
    options = {k: v for k, v in options.items() if v is not None}
    if name.startswith("file:"):
        if options:
            raise DataError(f"options {sorted(options)} do not apply to an external file")
        from bench.data.external import read_external

        return read_external(name[5:])
    loader = _loader(name)
    accepted = inspect.signature(loader).parameters
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise DataError(f"source {name!r} takes no option(s) {unknown}; it takes "
                        f"{', '.join(p for p in accepted if p != 'show_progress')}")
    if "show_progress" in accepted:
        options["show_progress"] = show_progress
    return loader(**options)


def source_options(name: str, descriptor: dict) -> dict:
    """The options that rebuild the data of ``descriptor`` from source ``name``: every scalar entry of the
    descriptor that the source's loader takes as a parameter (``{}`` for ``file:PATH``). Entries the
    loader cannot take (a nested configuration) are not passed: compare the rebuilt data's descriptor."""
    if name.startswith("file:"):
        return {}
    accepted = set(inspect.signature(_loader(name)).parameters) - {"show_progress", "use_cache"}
    return {k: v for k, v in descriptor.items() if k in accepted and isinstance(v, (bool, int, float, str))}


def data_digest(data: AttentionData) -> str:
    from predictors.fingerprint import tensor_digest

    return tensor_digest({"q": data.q, "k": data.k, "lengths": data.lengths})


def to_float32(data: AttentionData) -> AttentionData:
    """The same data with float32 tensors (predictors and metrics compute in float32)."""
    from dataclasses import replace

    conv = lambda t: None if t is None else t.to(torch.float32)
    return replace(data, q=conv(data.q), k=conv(data.k), v=conv(data.v))


def dataset_id(dataset: str) -> str:
    """A file-name-safe id: ``file:/x/my data.safetensors`` -> ``file-my_data``."""
    if dataset.startswith("file:"):
        stem = dataset[5:].rsplit("/", 1)[-1].rsplit(".", 1)[0]
        return "file-" + re.sub(r"[^A-Za-z0-9_.-]", "_", stem)
    return dataset
