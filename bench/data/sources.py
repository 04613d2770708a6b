"""The registry of attention sources, and the cached gold graph of any dataset.

``load_source(name, ...)`` returns an :class:`AttentionData`:

* ``minilm``: the pretrained MiniLM-L6 encoder (bidirectional), see :mod:`bench.data.minilm`;
* ``entmax-lm``: a small causal byte-level LM trained here with 1.5-entmax attention,
  see :mod:`bench.data.entmax_lm`;
* ``synthetic``: seeded data for tests, see :mod:`bench.data.synthetic`;
* ``file:PATH``: the external safetensors format, see :mod:`bench.data.external`.

``gold_for(data)`` computes the exact gold graph, cached under a key built from the data's descriptor,
a digest of its Q/K bytes, alpha, scale and library versions.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch

from bench.data.attention import AttentionData
from bench.errors import DataError
from bench.gold import Gold, LayerGold, compute_gold

SOURCES = ("minilm", "entmax-lm", "synthetic")


def known_sources() -> list[str]:
    return list(SOURCES) + ["file:PATH"]


def _loader(name: str):
    if name == "minilm":
        from bench.data.minilm import minilm_data

        return minilm_data
    if name == "entmax-lm":
        from bench.data.entmax_lm import entmax_lm_data

        return entmax_lm_data
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


def data_digest(data: AttentionData) -> str:
    from bench.data.cache import tensor_digest

    return tensor_digest({"q": data.q, "k": data.k, "lengths": data.lengths})


def gold_descriptor(data: AttentionData, block: int) -> dict:
    from bench.data.cache import versions

    return {"kind": "gold", "data": data.descriptor, "digest": data_digest(data), "alpha": data.alpha,
            "scale": data.scale, "causal": data.causal, "block": block, "versions": versions()}


def gold_for(data: AttentionData, block: int = 256, use_cache: bool = True,
             show_progress: bool = False) -> Gold:
    """The exact gold graph of ``data``, from the cache when a verified entry exists."""
    from bench.data.cache import load_or_build

    def build():
        gold = compute_gold(data, block=block, show_progress=show_progress)
        tensors = {}
        for i, layer in enumerate(gold.layers):
            tensors.update(layer.state(f"l{i}"))
        return tensors, {"seconds": gold.seconds, "bisect_iters": gold.bisect_iters}

    tensors, extra = load_or_build("gold", gold_descriptor(data, block), build, use_cache=use_cache)
    layers = [LayerGold(counts=tensors[f"l{i}.counts"], cols=tensors[f"l{i}.cols"], probs=tensors[f"l{i}.probs"],
                        lengths=data.lengths.clone(), causal=data.causal) for i in range(data.num_layers)]
    return Gold(layers=layers, seconds=float(extra["seconds"]), bisect_iters=extra.get("bisect_iters"))


@dataclass
class Prepared:
    """A dataset split by sample into fit and eval parts, each with its gold graph."""

    data: AttentionData
    fit: AttentionData
    eval: AttentionData
    fit_gold: Gold
    eval_gold: Gold


def prepare(name: str, fit_fraction: float = 0.5, show_progress: bool = False, use_cache: bool = True,
            **options) -> Prepared:
    """Load a source, split it by sample, and compute (or load) the gold of both parts."""
    data = load_source(name, show_progress=show_progress, **options)
    fit, ev = data.split(fit_fraction)
    return Prepared(data=data, fit=fit, eval=ev,
                    fit_gold=gold_for(fit, use_cache=use_cache, show_progress=show_progress),
                    eval_gold=gold_for(ev, use_cache=use_cache, show_progress=show_progress))


def to_float32(data: AttentionData) -> AttentionData:
    """The same data with float32 tensors (predictors and metrics compute in float32)."""
    from dataclasses import replace

    conv = lambda t: None if t is None else t.to(torch.float32)
    return replace(data, q=conv(data.q), k=conv(data.k), v=conv(data.v))
