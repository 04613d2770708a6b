"""Reports of a finished run. ``python -m bench.report RUN`` renders one (:mod:`cli`, :mod:`render`).

By job: :mod:`series` (what a series, the baseline and a ceiling are), :mod:`frames` (a run's files as
frames), :mod:`pareto` (Pareto fronts and matched-sparsity tables), :mod:`heads` (per-head grids),
:mod:`crossover` (from which n a predictor is cheaper than dense), :mod:`figures` (the plots),
:mod:`outputs` (figures, tables and Markdown a notebook writes), :mod:`render` (papermill, HTML,
README.md) and :mod:`cli` (the command line)."""
