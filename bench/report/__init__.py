"""Reports of a finished run: Pareto fronts and tables (:mod:`pareto`), figures and the papermill
rendering (:mod:`render`). ``python -m bench.report RUN`` renders one."""
