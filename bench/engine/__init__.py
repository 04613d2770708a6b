"""How measurements run: one configuration measured by one function, serially or as tasks on Ray.

* :mod:`bench.engine.measure`: fit, timed prediction and scoring of one predictor configuration, the
  record and graphs it yields: the one code path of the serial benchmark (``bench_predictors.py``),
  of the Ray tasks and of ``sparsebench score``.
* :mod:`bench.engine.plan`: which configurations share fitted state (:meth:`Predictor.shared_fit`),
  trained once per dataset and handed to every task that needs it.
* :mod:`bench.engine.ray_engine`: the sweep on Ray (a local instance, or a cluster by address): data in
  the object store once per dataset, one task per few configurations, results back to the driver as
  each task finishes; :mod:`bench.engine.tasks` is what runs on a worker.
* :mod:`bench.engine.scoring`: ``sparsebench score`` over many predictors, serially or on Ray.

The stage comes after ``results`` (it stores graphs with :mod:`bench.results.graph_store` and checks code
versions with :mod:`bench.results.run_folder`) and before ``config``.
"""
