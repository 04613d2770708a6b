"""FAISS twins of the families that cluster or hash: ``sf-kmeans``, ``routing``, ``reformer``, ``simhash``.

Each twin subclasses its torch twin and registers with ``backend = "faiss"`` (``@register``; the list is
``predictors.registry.families("faiss")``). It has its torch twin's family name, parameters and names,
and returns the same graph (a compact :class:`~predictors.graphs.CodeGraph`; SimHash's twin the explicit
pairs of the same rule); users switch with ``predictors.get(name, backend="faiss")`` and
may pass ``device="cuda"`` (a keyword, not a name parameter). What is shared, how threads are pinned
and where the twins can differ is in :mod:`predictors.faiss.common`.

Importing this package (or any module in it) does not import ``faiss``: that happens at the first
fit or predict, and a missing FAISS is then an error that says ``pip install faiss-cpu``. The registry
imports every module here on its first use, so a new twin module must keep that rule.
"""
