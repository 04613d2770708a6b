"""Name -> predictor family. FAISS families load lazily, so ``import predictors`` needs no FAISS.

``get("sf-kmeans", k=16)`` builds by family and keywords; ``get("sf-kmeans-r4-k16-top2-w11")`` parses a
full name (as printed by ``sparsebench list`` and stored in results). Unknown names are errors that
list the known families.
"""

from __future__ import annotations

import importlib

from predictors.errors import PredictorError

# family -> "module:Class". Torch families first; FAISS twins are the same family with backend faiss.
TORCH_FAMILIES: dict[str, str] = {
    "window": "predictors.torch.window:WindowOnly",
    "sf-dist": "predictors.torch.sf_distance:SparsefinderDistance",
    "sf-quant": "predictors.torch.sf_quantization:SparsefinderQuantization",
    "sf-kmeans": "predictors.torch.sf_clustering:SparsefinderClustering",
    "bigbird": "predictors.torch.bigbird:BigBird",
    "longformer": "predictors.torch.longformer:Longformer",
    "fixed": "predictors.torch.fixed:FixedPattern",
    "reformer": "predictors.torch.reformer:ReformerLSH",
    "routing": "predictors.torch.routing:RoutingKMeans",
    "oracle-thr": "predictors.torch.oracle:OracleThreshold",
    "oracle-margin": "predictors.torch.oracle:OracleMargin",
    "oracle-topk": "predictors.torch.oracle:OracleTopK",
    "xattention": "predictors.torch.xattention:XAttention",
    "minference": "predictors.torch.minference:MInferenceVS",
    "seer": "predictors.torch.seer:SeerGate",
    "quest": "predictors.torch.quest:Quest",
    "hashattn": "predictors.torch.hashattn:HashAttention",
    "simhash": "predictors.torch.simhash:SimHash",
}
FAISS_FAMILIES: dict[str, str] = {
    "sf-kmeans": "predictors.faiss.sf_clustering:FaissSparsefinderClustering",
    "routing": "predictors.faiss.routing:FaissRoutingKMeans",
    "reformer": "predictors.faiss.reformer:FaissReformerLSH",
    "simhash": "predictors.faiss.simhash:FaissSimHash",
}


def _load(path: str):
    module, cls = path.split(":")
    return getattr(importlib.import_module(module), cls)


def families(backend: str = "torch") -> list[str]:
    table = TORCH_FAMILIES if backend == "torch" else FAISS_FAMILIES
    return sorted(table)


def family_class(family: str, backend: str = "torch"):
    table = {"torch": TORCH_FAMILIES, "faiss": FAISS_FAMILIES}.get(backend)
    if table is None:
        raise PredictorError(f"unknown backend {backend!r}; known: torch, faiss")
    if family not in table:
        raise PredictorError(f"unknown predictor {family!r} for backend {backend}; "
                             f"known: {', '.join(sorted(table))}")
    return _load(table[family])


def family_of(name: str, backend: str = "torch") -> str | None:
    """The family of a configuration name for ``backend`` (the longest family prefix), or None."""
    table = TORCH_FAMILIES if backend == "torch" else FAISS_FAMILIES
    matches = [f for f in table if name == f or name.startswith(f + "-")]
    return max(matches, key=len) if matches else None


def parse_name(name: str, backend: str = "torch") -> tuple[str, dict]:
    """Split ``family-p1-p2...`` into the family and its keyword values."""
    family = family_of(name, backend)
    if family is None:
        table = TORCH_FAMILIES if backend == "torch" else FAISS_FAMILIES
        raise PredictorError(f"unknown predictor {name!r}; known families: {', '.join(sorted(table))}")
    cls = family_class(family, backend)
    rest = name[len(family) + 1:]
    tokens = rest.split("-") if rest else []
    values = {}
    specs = cls.all_params()
    for tok in tokens:
        spec = next((p for p in specs if p.choices is not None and p.type is str and tok in p.choices), None)
        if spec is None:
            cands = [p for p in specs if not (p.type is str and p.choices) and tok.startswith(p.prefix)
                     and _is_value(tok[len(p.prefix):], p.type)]
            spec = max(cands, key=lambda p: len(p.prefix)) if cands else None
        if spec is None:
            raise PredictorError(f"predictor {name!r}: cannot read {tok!r}; parameters of {family}: "
                                 + ", ".join(f"{p.prefix or p.key}<{p.type.__name__}>" for p in specs))
        values[spec.key] = spec.type(tok if spec.type is str else tok[len(spec.prefix):])
    return family, values


def _is_value(text: str, typ: type) -> bool:
    try:
        typ(text)
        return text != ""
    except ValueError:
        return False


def get(name: str, backend: str = "torch", seed: int = 0, **params):
    """Build a predictor from a family or full name, plus keyword parameters (which win)."""
    family, values = parse_name(name, backend)
    values.update(params)
    return family_class(family, backend)(seed=seed, **values)
