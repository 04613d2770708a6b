"""A dataset ready to benchmark: loaded, split by sample, with the (cached) gold graph of every part."""

from __future__ import annotations

from dataclasses import dataclass

from bench.data.sources import data_digest, load_source
from bench.evaluation.gold import compute_gold
from predictors.data import DEFAULT_SPLIT, AttentionData, check_split
from predictors.support import Gold, LayerGold


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
    """A dataset split by sample into fit, validation and eval parts, each with its gold graph.

    ``split`` is the (fit, val, eval) fractions it was made with (recorded with every result).
    """

    data: AttentionData
    fit: AttentionData
    val: AttentionData
    eval: AttentionData
    fit_gold: Gold
    val_gold: Gold
    eval_gold: Gold
    split: tuple[float, float, float] = DEFAULT_SPLIT


def prepare(name: str, split=DEFAULT_SPLIT, show_progress: bool = False, use_cache: bool = True,
            **options) -> Prepared:
    """Load a source, split it by sample (:meth:`AttentionData.split_three`), and compute (or load) the gold
    of every part."""
    split = check_split(split)
    data = load_source(name, show_progress=show_progress, **options)
    fit, val, ev = data.split_three(split)
    gold = lambda part: gold_for(part, use_cache=use_cache, show_progress=show_progress)
    return Prepared(data=data, fit=fit, val=val, eval=ev, fit_gold=gold(fit), val_gold=gold(val),
                    eval_gold=gold(ev), split=split)
