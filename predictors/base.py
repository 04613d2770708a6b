"""The predictor protocol: fit once on the fit samples, predict compact graphs for new Q/K.

A predictor family is a subclass of :class:`Predictor` declaring its parameters as :class:`Param` specs
and its ``kind``, registered with :func:`predictors.registry.register`. Its name encodes every parameter
(``sf-kmeans-r4-k16-top2-w11-g1``) and is the id used in tests, JSON and plots; :func:`parse_name` reads
such a name back.

Every predictor accepts the composable extras ``w`` (centred window of total width ``w``; causal:
``w // 2`` past tokens plus self), ``g`` (global tokens: 0 none, 1 first, 2 first and last) and ``s``
(learned sink tokens: the ``s`` key positions per layer and head, counted from the start or from the
end, that the most fit queries attend to; see :mod:`predictors.sinks`), which :meth:`Predictor.predict`
ORs into the family's own graph. ``s`` is fitted in :meth:`Predictor.fit` on the fit gold only.

Subclasses implement

* ``_fit(data, gold)``: learn everything data-dependent or random, per layer and head, from the fit
  samples only (seeded by ``self.seed``); the default does nothing;

A family whose graphs depend on the seed sets ``randomised = True`` (``tests/test_seeds.py`` checks
the flag both ways: two seeds give other graphs exactly when it is set).
* ``_predict(view, layer) -> PredictedGraph | None``: the family's own graph for a layer's eval
  Q/K (``None``: nothing beyond window and globals);
* ``_flops(n, d) -> float``: prediction cost per head for one sample of ``n`` tokens, head dim ``d``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar

from predictors.errors import PredictorError
from predictors.graphs import GlobalGraph, PredictedGraph, WindowGraph


@dataclass(frozen=True)
class Param:
    """One parameter: its keyword, the prefix in names, its type, default and allowed values.

    A parameter whose default is ``None`` is optional: unset, it has the value ``None`` and is left out
    of names.
    """

    key: str
    prefix: str
    type: type
    default: Any
    choices: tuple | None = None
    doc: str = ""

    def format(self, value) -> str:
        if self.choices is not None and self.type is str:
            return str(value)
        if self.type is float:
            return f"{self.prefix}{value:g}"
        return f"{self.prefix}{value}"

    def name_problem(self, value, exact: bool = False) -> str | None:
        """Why ``value`` (of this parameter's type) cannot be written in a name, or None. A name is the id
        of a configuration's results and is read back by :func:`predictors.registry.parse_name`, so a
        float must be finite and print without ``-`` (which separates parameters); with ``exact``, it
        must also read back as the same number (``%g`` keeps six significant digits: a name that gives
        more is refused, while a predictor built from such a value in code keeps the rounded name)."""
        if self.type is not float:
            return None
        if not math.isfinite(value):
            return f"parameter {self.key}={value!r} must be a finite number"
        text = self.format(value)[len(self.prefix):]
        if "-" in text:
            return f"parameter {self.key}={value!r} cannot be written in a name (it would contain '-')"
        if exact and float(text) != value:
            return (f"parameter {self.key}={value!r} cannot be written exactly in a name (it would read "
                    f"{self.prefix}{text}); give a value a name holds, such as {text}")
        return None


COMMON = (
    Param("w", "w", int, 0, doc="centred window of total width w (causal: w//2 past tokens + self)"),
    Param("g", "g", int, 0, choices=(0, 1, 2), doc="global tokens: 0 none, 1 first, 2 first and last"),
    Param("s", "s", int, 0, doc="learned sink key columns per layer and head, found on the fit gold (0 none)"),
)


class Predictor:
    """Base class of every predictor; see the module docstring."""

    family: ClassVar[str] = ""
    # What the family reads to predict: one of predictors.registry.KINDS (fixed, hashing, learned, block,
    # ceiling); recorded with every result, and a ceiling is timed and reported apart.
    kind: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()
    learned: ClassVar[bool] = False  # whether fit() looks at data (for the fit/eval split test)
    # Whether the graphs depend on ``seed`` (random rotations, hashes, keys, initialisations or k-means++
    # seeding): the suite runs such a configuration once per seed of its profile, every other once, and
    # the report's intervals resample seeds too. Read it on an instance: a family may decide per
    # configuration (BigBird draws random keys only when r > 0).
    randomised: ClassVar[bool] = False
    backend: ClassVar[str] = "torch"
    # Block-level families name the parameter holding their tile size B; the records then carry the
    # tile (block) sparsity beside the token sparsity.
    block_param: ClassVar[str | None] = None

    def __init__(self, seed: int = 0, **values):
        self.seed = seed
        specs = {p.key: p for p in self.all_params()}
        unknown = sorted(set(values) - set(specs))
        if unknown:
            raise PredictorError(f"{self.family}: unknown parameter(s) {unknown}; "
                                 f"known: {', '.join(specs)}")
        self.values = {}
        for key, spec in specs.items():
            v = values.get(key, spec.default)
            if v is None and spec.default is None:  # an optional parameter left unset
                self.values[key] = None
                continue
            try:
                v = spec.type(v)
            except (TypeError, ValueError):
                raise PredictorError(f"{self.family}: parameter {key}={v!r} is not a {spec.type.__name__}") from None
            if spec.choices is not None and v not in spec.choices:
                raise PredictorError(f"{self.family}: parameter {key}={v!r} not in {spec.choices}")
            self.values[key] = v
        self.check()
        for spec in specs.values():  # after the family's own rules, which name a bad value better
            problem = None if self.values[spec.key] is None else spec.name_problem(self.values[spec.key])
            if problem:
                raise PredictorError(f"{self.family}: {problem}")
        if self.values["s"] > 0:
            self.learned = True  # the sinks are read from the fit gold
        self.sinks = None  # predictors.sinks.Sinks when s > 0, after fit()
        self.fitted = False
        self.fit_seconds = float("nan")

    @classmethod
    def all_params(cls) -> tuple[Param, ...]:
        return tuple(cls.params) + COMMON

    def check(self) -> None:
        """Validate parameter values (override to add family rules); raise PredictorError."""
        if self.values["w"] < 0:
            raise PredictorError(f"{self.family}: window width w must be >= 0, got {self.values['w']}")
        if self.values["s"] < 0:
            raise PredictorError(f"{self.family}: sink count s must be >= 0, got {self.values['s']}")

    def __getattr__(self, key):
        values = self.__dict__.get("values", {})
        if key in values:
            return values[key]
        raise AttributeError(key)

    @property
    def name(self) -> str:
        parts = [self.family]
        for spec in self.all_params():
            v = self.values[spec.key]
            if v is None or (spec in COMMON and v == spec.default):
                continue
            parts.append(spec.format(v))
        return "-".join(parts)

    @property
    def variant(self) -> str:
        """``helped`` when the graph includes the paper's helper (a window of ``w >= 3`` and the first token:
        ``g >= 1``), else ``bare``: the report compares bare with bare and helped with helped."""
        return "helped" if self.values["w"] >= 3 and self.values["g"] >= 1 else "bare"

    def __repr__(self):
        return f"<{type(self).__name__} {self.name}>"

    def shared_fit(self) -> tuple | None:
        """What of this configuration's fit other configurations share: the key (hashable, the same for
        every configuration that reuses it, across families) of state its fit keeps in a
        :mod:`predictors.memo` table, such as the learned projections; ``None`` (the default) when its
        fit shares nothing. A distributed sweep trains each key once and hands the state to the
        configurations that share it (bench/engine)."""
        return None

    # -- protocol ----------------------------------------------------------------------------------
    def fit(self, data, gold) -> Predictor:
        """Fit on the fit part (an AttentionData and its Gold); records ``fit_seconds``.

        With ``s > 0`` the sink positions are found on ``gold`` too (inside ``fit_seconds``).
        """
        start = time.perf_counter()
        self._fit(data, gold)
        if self.values["s"] > 0:
            from predictors.sinks import fit_sinks

            self.sinks = fit_sinks(gold, self.values["s"])
            self.learned = True  # again: a family __init__ may have set its own flag after ours
        self.fit_seconds = time.perf_counter() - start
        self.fitted = True
        return self

    def check_fitted(self, layer: int, heads: int, fitted_layers: int, fitted_heads: int,
                     dim: int | None = None, fitted_dim: int | None = None) -> None:
        """Refuse a layer, head count or (when given) feature dimension that the fitted state does not
        cover: ``fitted_layers x fitted_heads`` heads of dimension ``fitted_dim``."""
        if layer >= fitted_layers or heads != fitted_heads or (dim is not None and dim != fitted_dim):
            of = "" if fitted_dim is None else f" of dim {fitted_dim}"
            got = "" if dim is None else f" of dim {dim}"
            raise PredictorError(f"{self.name}: fitted for {fitted_layers} layers x {fitted_heads} heads{of}, "
                                 f"asked for layer {layer} with {heads} heads{got}")

    def predict(self, view, layer: int) -> PredictedGraph:
        """The predicted graph of one layer (``view``: LayerView of eval samples, all heads)."""
        if not self.fitted:
            raise PredictorError(f"{self.name}: call fit() before predict()")
        nh = view.q.shape[1]
        graph = self._predict(view, layer)
        extras = []
        if self.values["w"] > 0:
            extras.append(WindowGraph(self.values["w"], nh))
        if self.values["g"] > 0:
            extras.append(GlobalGraph((0,) if self.values["g"] == 1 else (0, -1), nh))
        if self.sinks is not None:
            extras.append(self.sinks.graph(layer, nh))
        parts = ([graph] if graph is not None else []) + extras
        if not parts:
            return WindowGraph(0, nh)
        out = parts[0]
        for p in parts[1:]:
            out = out | p
        return out

    def flops(self, n: int, d: int) -> float:
        """Prediction FLOPs per head for one sample of ``n`` tokens (window/globals are free)."""
        return float(self._flops(n, d))

    def _fit(self, data, gold) -> None:
        pass

    def _predict(self, view, layer):
        return None

    def _flops(self, n: int, d: int) -> float:
        return 0.0
