"""Reports of a finished run. ``python -m bench.report RUN`` renders one (:mod:`cli`, :mod:`render`).

By job: :mod:`series` (what a series, the baseline, a ceiling, a kind and a variant are), :mod:`frames`
(a run's files as frames), :mod:`pareto` (Pareto fronts and matched-sparsity tables), :mod:`front_stats`
(readings of a front at levels, areas, bootstrap intervals, verdicts), :mod:`claims` (the paper's claim
table), :mod:`selection` (configurations selected on validation, reported on eval), :mod:`fair` (each
family's reported front: readings, areas and intervals), :mod:`findings` (the first page's tables and
sentences), :mod:`heads` (per-head grids), :mod:`crossover` (from which n a predictor is cheaper than
dense), :mod:`figures` and :mod:`facets` (the plots; facets: the three-panel fronts), :mod:`outputs`
(figures, tables and Markdown a notebook writes), :mod:`render` (papermill, HTML, README.md) and
:mod:`cli` (the command line)."""
