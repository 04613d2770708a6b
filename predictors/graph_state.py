"""Compact predicted graphs as a flat dict of tensors plus a small JSON-able spec, and back, exactly.

:func:`graph_to_state` walks a graph's dataclass fields: every tensor goes into the flat dict under a
dotted key (``prefix.field``, ``prefix.parts.0.q_codes``...) and is named in the spec as
``{"tensor": key}``; ints, floats, strings, bools and ``None`` stay in the spec as themselves;
lists and tuples become ``{"list": [...]}`` / ``{"tuple": [...]}``; a nested graph (the parts of a
:class:`~predictors.graphs.UnionGraph`) or a small dataclass value (the rule of a
:class:`~predictors.graphs.FunctionGraph`) becomes ``{"graph" | "object": "module:Class", "fields": {...}}``.
Any :class:`~predictors.graphs.PredictedGraph` that is a dataclass of such values round-trips,
family graphs included; anything else (a lambda rule) is refused by name.

``shared``: named tensors the reader will have too (a layer's eval ``q``, ``k``, ``v``). A graph
tensor equal to one of them (same dtype, shape and values) is stored as ``{"shared": name}`` rather
than copied: the ceilings keep the whole eval Q/K in their graphs. :func:`graph_from_state` puts the
reader's tensor back, which gives the same masks when the reader's data is the same (check its digest).

:func:`graph_from_state` imports classes only from ``predictors`` modules: a stored spec never makes
it import anything else.
"""

from __future__ import annotations

import dataclasses
import importlib

import torch

from predictors.errors import PredictorError
from predictors.graphs import PredictedGraph
from predictors.registry import FAMILIES_ENV, family_module

_SCALARS = (bool, int, float, str, type(None))


def graph_to_state(graph: PredictedGraph, prefix: str = "graph",
                   shared: dict[str, torch.Tensor | None] | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """``(tensors, spec)`` of ``graph``: CPU contiguous tensors keyed ``prefix.<path>``, and the JSON-able spec.

    Raises
    ------
    PredictorError
        when a field holds something that cannot be stored (a function, a non-``predictors`` class).
    """
    tensors: dict[str, torch.Tensor] = {}
    spec = _encode(graph, prefix, tensors, {k: v for k, v in (shared or {}).items() if v is not None})
    return tensors, spec


def graph_from_state(tensors: dict[str, torch.Tensor], spec: dict,
                     shared: dict[str, torch.Tensor | None] | None = None) -> PredictedGraph:
    """The graph that :func:`graph_to_state` stored as ``(tensors, spec)``; ``shared`` as given to it."""
    graph = _decode(spec, tensors, shared or {})
    if not isinstance(graph, PredictedGraph):
        raise PredictorError(f"graph spec describes {type(graph).__name__}, not a predicted graph")
    return graph


def _class_path(obj) -> str:
    cls = type(obj)
    if not family_module(cls.__module__) or "<" in cls.__qualname__:
        raise PredictorError(f"cannot store a {cls.__module__}.{cls.__qualname__}: only dataclasses of predictors "
                             f"modules (or of family modules named in {FAMILIES_ENV}) can be stored")
    return f"{cls.__module__}:{cls.__qualname__}"


def _encode(value, key: str, tensors: dict, shared: dict):
    if isinstance(value, torch.Tensor):
        for name, t in shared.items():
            if t.dtype == value.dtype and t.shape == value.shape and torch.equal(t.cpu(), value.cpu()):
                return {"shared": name}
        tensors[key] = value.detach().cpu().contiguous()
        return {"tensor": key}
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, (list, tuple)):
        items = [_encode(v, f"{key}.{i}", tensors, shared) for i, v in enumerate(value)]
        return {"tuple" if isinstance(value, tuple) else "list": items}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        kind = "graph" if isinstance(value, PredictedGraph) else "object"
        fields = {f.name: _encode(getattr(value, f.name), f"{key}.{f.name}", tensors, shared)
                  for f in dataclasses.fields(value)}
        return {kind: _class_path(value), "fields": fields}
    if isinstance(value, PredictedGraph):
        raise PredictorError(f"cannot store a {type(value).__name__}: graphs are stored field by field, "
                             "so a graph class must be a dataclass")
    raise PredictorError(f"cannot store {key} = {value!r} ({type(value).__name__}): only tensors, numbers, "
                         "strings, lists, tuples and predictors dataclasses can be stored")


def _decode(spec, tensors: dict, shared: dict):
    if isinstance(spec, _SCALARS):
        return spec
    if not isinstance(spec, dict):
        raise PredictorError(f"malformed graph spec {spec!r}")
    if "tensor" in spec:
        if spec["tensor"] not in tensors:
            raise PredictorError(f"graph spec names tensor {spec['tensor']!r}, which is not stored")
        return tensors[spec["tensor"]]
    if "shared" in spec:
        if shared.get(spec["shared"]) is None:
            raise PredictorError(f"graph spec refers to the shared tensor {spec['shared']!r}, not given")
        return shared[spec["shared"]]
    if "list" in spec or "tuple" in spec:
        items = [_decode(v, tensors, shared) for v in spec.get("list", spec.get("tuple"))]
        return items if "list" in spec else tuple(items)
    path = spec.get("graph", spec.get("object"))
    if not isinstance(path, str) or not isinstance(spec.get("fields"), dict):
        raise PredictorError(f"malformed graph spec {str(spec)[:80]!r}")
    cls = _resolve(path, graph="graph" in spec)
    return cls(**{name: _decode(v, tensors, shared) for name, v in spec["fields"].items()})


def _resolve(path: str, graph: bool):
    module, _, name = path.partition(":")
    if not family_module(module) or not name:
        raise PredictorError(f"graph spec names {path!r}: only classes of predictors (or of family modules named "
                             f"in {FAMILIES_ENV}) can be loaded")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise PredictorError(f"graph spec names {path!r}, which cannot be loaded here ({exc})") from None
    if not dataclasses.is_dataclass(cls) or graph != issubclass(cls, PredictedGraph):
        raise PredictorError(f"graph spec names {path!r}, which is not a stored {'graph' if graph else 'value'} type")
    return cls
