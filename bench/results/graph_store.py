"""The predicted graphs of a predictor record, kept beside it so its metrics can be recomputed later.

``records/predictor/<id>.graphs.safetensors`` holds the eval graphs of every layer of record
``<id>.json``: the tensors of :meth:`predictors.graphs.PredictedGraph.to_state` (layer ``l`` under the
prefix ``l<l>``) and, in the safetensors metadata, ``format``, ``layers`` (the JSON list of the layers'
specs) and ``eval_digest`` (:func:`bench.data.sources.data_digest` of the eval samples the graphs were
predicted on). Tensors equal to a layer's eval ``q``, ``k`` or ``v`` are not copied but named
(``shared``): the reader rebuilds the eval data, checks its digest, and passes them back.

Stored compactly and losslessly: int64 tensors (codes, key lists, pair indices) in the narrowest integer
type that holds their values, bool tensors packed 8 to a byte; ``encodings`` in the metadata names
the original dtype or shape, and reading restores exactly the tensors of ``to_state``.

The file is written atomically (temporary file, then rename) before the JSON record, so a record never
names a missing or truncated graphs file.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from bench.data.atomic import write_atomic
from bench.data.sources import data_digest
from bench.errors import BenchError
from predictors.data import AttentionData
from predictors.errors import PredictorError
from predictors.graph_state import graph_from_state
from predictors.graphs import PredictedGraph

FORMAT = "sparsebench-graphs/1"
SUFFIX = ".graphs.safetensors"


def graphs_path(record: Path) -> Path:
    """``records/<kind>/<id>.json`` -> ``records/<kind>/<id>.graphs.safetensors``."""
    return record.with_name(record.name.removesuffix(".json") + SUFFIX)


def _shared(data: AttentionData, layer: int) -> dict:
    view = data.layer(layer)
    return {"q": view.q, "k": view.k, "v": view.v}


def _encode(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict]:
    # Own copies throughout: safetensors refuses tensors that share memory (views of one predictor tensor).
    stored, encodings = {}, {}
    for key, t in tensors.items():
        if t.dtype == torch.bool:
            stored[key] = torch.from_numpy(np.packbits(t.numpy().ravel()))
            encodings[key] = {"bits": list(t.shape)}
        elif t.dtype == torch.int64 and t.numel():
            lo, hi = int(t.min()), int(t.max())
            small = next(d for d in (torch.int8, torch.int16, torch.int32, torch.int64)
                         if torch.iinfo(d).min <= lo and hi <= torch.iinfo(d).max)
            stored[key] = t.to(small) if small != torch.int64 else t.clone()
            if small != torch.int64:
                encodings[key] = {"dtype": "int64"}
        else:
            stored[key] = t.clone()
    return stored, encodings


def _decode(stored: dict[str, torch.Tensor], encodings: dict) -> dict[str, torch.Tensor]:
    out = dict(stored)
    for key, enc in encodings.items():
        if "bits" in enc:
            shape = enc["bits"]
            bits = np.unpackbits(stored[key].numpy(), count=math.prod(shape)).astype(bool)
            out[key] = torch.from_numpy(bits.reshape(shape))
        else:
            out[key] = stored[key].to(torch.int64)
    return out


def write_graphs_atomic(path: Path, graphs: list[PredictedGraph], data: AttentionData) -> None:
    """Store ``graphs[l]``, the graph of eval layer ``l`` predicted on ``data``, for every layer."""
    write_graph_state_atomic(path, graphs_state(graphs, data))


def graphs_state(graphs: list[PredictedGraph], data: AttentionData) -> tuple[dict[str, torch.Tensor], dict]:
    """``(tensors, metadata)``: what :func:`write_graph_state_atomic` writes for ``graphs`` predicted on
    ``data``, compact (shared tensors named, integers narrowed, bits packed): what a worker of a
    distributed sweep sends back instead of the graphs themselves (bench/engine)."""
    tensors, specs = {}, []
    for layer, graph in enumerate(graphs):
        part, spec = graph.to_state(f"l{layer}", shared=_shared(data, layer))
        tensors.update(part)
        specs.append(spec)
    stored, encodings = _encode(tensors)
    meta = {"format": FORMAT, "layers": json.dumps(specs), "encodings": json.dumps(encodings),
            "eval_digest": data_digest(data)}
    return stored, meta


def write_graph_state_atomic(path: Path, state: tuple[dict[str, torch.Tensor], dict]) -> None:
    """Write a :func:`graphs_state` to ``path`` atomically."""
    from safetensors.torch import save_file

    stored, meta = state
    write_atomic(path, lambda tmp: save_file(stored, str(tmp), metadata=meta))


def read_graphs(path: Path, data: AttentionData) -> list[PredictedGraph]:
    """The graphs of every layer stored in ``path``, for the eval samples ``data`` they were predicted on.

    Raises
    ------
    BenchError
        for a missing, unreadable or foreign file, or when ``data`` is not the data of the graphs.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    if not path.is_file():
        raise BenchError(f"graphs file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise BenchError(f"graphs file {path} is unreadable ({exc})") from None
    if meta.get("format") != FORMAT:
        raise BenchError(f"{path} is not a graphs file of format {FORMAT} (format {meta.get('format')!r})")
    if meta.get("eval_digest") != data_digest(data):
        raise BenchError(f"{path} was predicted on other eval data than the data rebuilt now (digest differs)")
    try:
        specs = json.loads(meta["layers"])
        tensors = _decode(tensors, json.loads(meta["encodings"]))
        return [graph_from_state(tensors, spec, shared=_shared(data, layer)) for layer, spec in enumerate(specs)]
    except (KeyError, json.JSONDecodeError, PredictorError) as exc:
        raise BenchError(f"graphs file {path} is corrupt ({exc})") from None
