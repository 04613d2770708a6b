"""Family name -> predictor class: a family is one module that registers its class with :func:`register`.

``get("sf-kmeans", k=16)`` builds by family and keywords; ``get("sf-kmeans-r4-k16-top2-w11")`` parses a
full name (as printed by ``sparsebench list`` and stored in results). Unknown names are errors that
list the known families. A name has one spelling (:func:`canonical_name`): a parameter given twice,
``window-w011`` or ``sf-dist-r4-t1.50`` is an error that says the spelling (``did you mean window-w11?``).

Registration and discovery
--------------------------
A family class is decorated with :func:`register`; its class attributes say everything the suite needs:
``family`` (the name prefix), ``kind`` (one of :data:`KINDS`), ``backend`` (``"torch"``, or
``"faiss"`` for a FAISS twin, which keeps its torch twin's ``family``: it subclasses it) and, for tile
families, ``block_param``. Nothing is imported when ``predictors`` is: on the first question (any
function below) the registry imports every module of :data:`BUILTIN_PACKAGES` (the FAISS modules import
``faiss`` only when a twin fits or predicts) and then every module named in the environment variable
:data:`FAMILIES_ENV` (comma-separated importable module names: a user's own families). A built-in module
that cannot be imported (a missing optional dependency) is reported by :func:`unavailable` and in the
unknown-name errors; a module named in :data:`FAMILIES_ENV` that cannot be imported is an error.
"""

from __future__ import annotations

import importlib
import os
import pkgutil

from predictors.errors import PredictorError

# The kinds of family: what a family reads to predict (documented for ``sparsebench list`` and records).
KINDS: dict[str, str] = {
    "fixed": "a positional pattern, independent of the values of Q and K (window, BigBird, Longformer)",
    "hashing": "random hashes or projections of Q and K, nothing trained on them (Reformer LSH, SimHash)",
    "learned": "parameters trained on the fit samples: projections, centroids, learned bits",
    "block": "coarse units (tiles, pages, key columns, diagonals) chosen from a cheap estimate of the scores; "
             "tile families name their tile size in block_param",
    "ceiling": "reads the exact dense scores: not cheap, the bound the cheap families are measured against",
}
BACKENDS = ("torch", "faiss")
BUILTIN_PACKAGES = ("predictors.torch", "predictors.faiss")
FAMILIES_ENV = "SPARSEBENCH_FAMILIES"

_TABLES: dict[str, dict[str, type]] = {b: {} for b in BACKENDS}
_BUILTINS_FOUND: list[bool] = []  # non-empty once the built-in packages were imported
_EXTRAS_FOUND: set[str] = set()  # modules of FAMILIES_ENV imported so far
_UNAVAILABLE: dict[str, str] = {}  # built-in module -> why it could not be imported


def register(cls: type) -> type:
    """Class decorator: add a family (``backend`` torch) or a FAISS twin (``backend`` faiss) to the registry.

    Checks the class attributes (see the module docstring); registering another class under a taken
    ``(backend, family)`` is an error (re-importing the same module replaces its own class).
    """
    from predictors.base import Predictor  # already imported by the module defining cls

    who = f"{cls.__module__}.{cls.__qualname__}"
    if not (isinstance(cls, type) and issubclass(cls, Predictor)):
        raise PredictorError(f"register: {who} is not a predictors.base.Predictor subclass")
    family, kind, backend = getattr(cls, "family", ""), getattr(cls, "kind", ""), getattr(cls, "backend", "")
    if not family or family != family.strip() or " " in family:
        raise PredictorError(f"register: {who} has no usable family name ({family!r})")
    if kind not in KINDS:
        raise PredictorError(f"register: {who} (family {family}) has kind {kind!r}; known: {', '.join(KINDS)}")
    if backend not in BACKENDS:
        raise PredictorError(f"register: {who} has backend {backend!r}; known: {', '.join(BACKENDS)}")
    if cls.block_param is not None and cls.block_param not in {p.key for p in cls.all_params()}:
        raise PredictorError(f"register: {who}: block_param {cls.block_param!r} is not one of its parameters")
    if backend == "faiss" and family not in _TABLES["torch"]:
        raise PredictorError(f"register: FAISS twin {who} of {family!r}, which is no registered torch family")
    old = _TABLES[backend].get(family)
    if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
        raise PredictorError(f"register: family {family!r} ({backend}) is registered twice: by "
                             f"{old.__module__}.{old.__qualname__} and by {who}")
    _TABLES[backend][family] = cls
    return cls


def _extra_modules() -> list[str]:
    return [m.strip() for m in os.environ.get(FAMILIES_ENV, "").split(",") if m.strip()]


def family_module(module: str) -> bool:
    """Whether ``module`` holds predictor code this process trusts: ``predictors`` and its submodules, or
    a user's family module named in :data:`FAMILIES_ENV` (stored graphs may name classes of either)."""
    return module == "predictors" or module.startswith("predictors.") or module in _extra_modules()


def discover() -> None:
    """Import the built-in family modules (once) and the modules of :data:`FAMILIES_ENV` not imported yet."""
    if not _BUILTINS_FOUND:
        _BUILTINS_FOUND.append(True)  # first: a family module asking the registry must not recurse
        for pkg in BUILTIN_PACKAGES:
            for info in pkgutil.iter_modules(importlib.import_module(pkg).__path__):
                module = f"{pkg}.{info.name}"
                try:
                    importlib.import_module(module)
                except ImportError as exc:  # an optional dependency: say so where families are listed
                    _UNAVAILABLE[module] = str(exc)
    for module in _extra_modules():
        if module in _EXTRAS_FOUND:
            continue
        try:
            importlib.import_module(module)
        except (ImportError, SyntaxError) as exc:
            raise PredictorError(f"{FAMILIES_ENV} names the module {module!r}, which cannot be imported: "
                                 f"{type(exc).__name__}: {exc}") from None
        _EXTRAS_FOUND.add(module)


def unavailable() -> dict[str, str]:
    """Built-in family modules that could not be imported here, with the reason."""
    discover()
    return dict(_UNAVAILABLE)


def _table(backend: str) -> dict[str, type]:
    if backend not in _TABLES:
        raise PredictorError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
    discover()
    return _TABLES[backend]


def families(backend: str = "torch") -> list[str]:
    """Registered family names of ``backend``, sorted (``"faiss"``: the families with a FAISS twin)."""
    return sorted(_table(backend))


def _unknown(what: str, backend: str) -> PredictorError:
    torch_fams = _table("torch")
    if backend == "faiss" and what in torch_fams:
        return PredictorError(f"no FAISS twin of {what}; families with a twin: {', '.join(families('faiss'))}")
    missing = f"; not importable here: {', '.join(sorted(_UNAVAILABLE))}" if _UNAVAILABLE else ""
    return PredictorError(f"unknown predictor {what!r} for backend {backend}; "
                          f"known families: {', '.join(families(backend))}{missing}")


def family_class(family: str, backend: str = "torch") -> type:
    """The class registered for ``family`` and ``backend``; a PredictorError listing the known ones."""
    table = _table(backend)
    if family not in table:
        raise _unknown(family, backend)
    return table[family]


def family_of(name: str, backend: str = "torch") -> str | None:
    """The family of a configuration name for ``backend`` (the longest family prefix), or None."""
    matches = [f for f in _table(backend) if name == f or name.startswith(f + "-")]
    return max(matches, key=len) if matches else None


def _read_tokens(name: str, family: str, cls: type) -> list[tuple]:
    """The parameters that the tokens of ``name`` after ``family-`` give, as ``(Param, value)`` in name order;
    a PredictorError for a token that no parameter reads or a parameter given twice."""
    rest = name[len(family) + 1:]
    specs = cls.all_params()
    read: list[tuple[object, object]] = []
    given: dict[str, str] = {}
    for tok in rest.split("-") if rest else []:
        spec = next((p for p in specs if p.choices is not None and p.type is str and tok in p.choices), None)
        if spec is None:
            cands = [p for p in specs if not (p.type is str and p.choices) and tok.startswith(p.prefix)
                     and _is_value(tok[len(p.prefix):], p.type)]
            spec = max(cands, key=lambda p: len(p.prefix)) if cands else None
        if spec is None:
            raise PredictorError(f"predictor {name!r}: cannot read {tok!r}; parameters of {family}: "
                                 + ", ".join(f"{p.prefix or p.key}<{p.type.__name__}>" for p in specs))
        if spec.key in given:
            raise PredictorError(f"predictor {name!r}: parameter {spec.key} is given twice ({given[spec.key]}, "
                                 f"{tok}); a name gives each parameter at most once")
        given[spec.key] = tok
        read.append((spec, spec.type(tok if spec.type is str else tok[len(spec.prefix):])))
    return read


def _parse(name: str, backend: str) -> tuple[str, type, dict, list]:
    family = family_of(name, backend)
    if family is None:
        raise _unknown(family_of(name, "torch") or name, backend)
    cls = family_class(family, backend)
    read = _read_tokens(name, family, cls)
    return family, cls, {spec.key: v for spec, v in read}, read


def canonical_name(name: str, backend: str = "torch") -> str:
    """The one spelling of the configuration that ``name`` gives: the family, then the parameters that
    ``name`` sets, each written as the predictor writes its name, in that order; a parameter the
    predictor leaves out of its name at its value (``g0``, ``sep``) is dropped. So a full name printed by
    a predictor is its own canonical name, and so is a bare family name.
    """
    return _spelled(*_parse(name, backend))


def _spelled(family: str, cls: type, values: dict, read: list) -> str:
    for spec, v in read:
        problem = spec.name_problem(v, exact=True)
        if problem:
            raise PredictorError(f"{family}: {problem}")
    try:
        printed = cls(**values).name
    except PredictorError:  # values the family refuses alone (get() may add keywords): spell them one by one
        order = [p.key for p in cls.all_params()]
        return "-".join([family] + [spec.format(v) for spec, v in sorted(read, key=lambda r: order.index(r[0].key))])
    tokens = printed[len(family) + 1:].split("-") if printed != family else []
    keys = [spec.key for spec, _ in _read_tokens(printed, family, cls)]
    return "-".join([family] + [tok for tok, key in zip(tokens, keys) if key in values])


def parse_name(name: str, backend: str = "torch") -> tuple[str, dict]:
    """Split ``family-p1-p2...`` into the family and its keyword values.

    Only canonical names are read (:func:`canonical_name`): every parameter at most once, each value in
    the one spelling the predictor prints (``window-w11``, never ``window-w011``, ``window-w+11`` or other
    digits), in the predictor's order, so that one configuration has one name, the id of its results.
    A bare family name stands for the family with its defaults.
    """
    parsed = _parse(name, backend)
    family, values, canonical = parsed[0], parsed[2], _spelled(*parsed)
    if canonical != name:
        raise PredictorError(f"predictor {name!r} is not spelled canonically: did you mean {canonical}? "
                             "(one spelling per configuration: its name is the id of its results)")
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
