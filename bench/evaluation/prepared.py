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
    return load_gold(data, block=block, use_cache=use_cache, show_progress=show_progress)[0]


def load_gold(data: AttentionData, block: int = 256, use_cache: bool = True,
              show_progress: bool = False) -> tuple[Gold, bool]:
    """``(gold, from_cache)``: :func:`gold_for`, and whether the gold was read from the cache (its
    ``seconds`` are then those of the run that computed it, not of this call)."""
    from bench.data.cache import load_or_build

    built = []

    def build():
        gold = compute_gold(data, block=block, show_progress=show_progress)
        built.append(True)
        tensors = {}
        for i, layer in enumerate(gold.layers):
            tensors.update(layer.state(f"l{i}"))
        return tensors, {"seconds": gold.seconds, "bisect_iters": gold.bisect_iters}

    tensors, extra = load_or_build("gold", gold_descriptor(data, block), build, use_cache=use_cache)
    layers = [LayerGold(counts=tensors[f"l{i}.counts"], cols=tensors[f"l{i}.cols"], probs=tensors[f"l{i}.probs"],
                        lengths=data.lengths.clone(), causal=data.causal) for i in range(data.num_layers)]
    gold = Gold(layers=layers, seconds=float(extra["seconds"]), bisect_iters=extra.get("bisect_iters"))
    return gold, not built


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
    gold_from_cache: tuple[bool, bool, bool] = (False, False, False)


def prepare(name: str, split=DEFAULT_SPLIT, show_progress: bool = False, use_cache: bool = True,
            **options) -> Prepared:
    """Load a source, split it by sample (:meth:`AttentionData.split_three`), and compute (or load) the gold
    of every part."""
    split = check_split(split)
    data = load_source(name, show_progress=show_progress, **options)
    fit, val, ev = data.split_three(split)
    golds = [load_gold(part, use_cache=use_cache, show_progress=show_progress) for part in (fit, val, ev)]
    return Prepared(data=data, fit=fit, val=val, eval=ev, fit_gold=golds[0][0], val_gold=golds[1][0],
                    eval_gold=golds[2][0], split=split, gold_from_cache=tuple(g[1] for g in golds))
