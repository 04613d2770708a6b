"""A sweep of configurations on Ray: a local instance by default, a cluster by address.

:func:`run_cases` puts each dataset's :class:`~bench.evaluation.prepared.Prepared` (data and gold) into
Ray's object store once, starts one task per piece of shared fitted state (:mod:`bench.engine.plan`)
and one task per configuration (:func:`bench.engine.tasks.run_case`, depending on its state's task),
and hands every result to the caller as its task finishes (``ray.wait``), so a caller that writes
records loses none it was given when the driver is interrupted. A task that raises is retried
(:data:`RETRIES`, Ray's own retries); one that still fails is reported by configuration. Workers
are checked to run the driver's code (:func:`bench.results.run_folder.code_version`).

* No address: Ray starts here with one worker per usable core (``ray.init(address="local")``), and
  stops at the end of the sweep.
* ``auto`` or ``HOST:PORT``: the driver joins that cluster (``ray start --head`` ... ) and ships
  ``bench`` and ``predictors`` to it (``runtime_env`` ``py_modules``), so every node runs this checkout.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path

from bench.engine.measure import Case
from bench.engine.plan import plan
from bench.engine.tasks import Settings, fit_state, run_case
from bench.errors import BenchError
from bench.progress import Step

MISSING = "--engine ray needs the 'ray' package: pip install 'sparsefinder-bench[ray]'"
RETRIES = 1  # a task that raises runs once more before it counts as failed (a lost worker: Ray's default)
PROBE_SECONDS = 5.0

#: ``on_result(case, result)``: a :func:`bench.engine.tasks.run_case` result; ``on_error(case, message)``.
OnResult = Callable[[Case, dict], None]
OnError = Callable[[Case, str], None]


def available() -> bool:
    """Whether ``ray`` can be imported here (without importing it)."""
    return importlib.util.find_spec("ray") is not None


def check_engine(engine: str, address: str | None, device: str = "cpu") -> None:
    """One line (BenchError) for an engine setting that cannot work, before any work: ``ray`` missing,
    ``--address`` without ``--engine ray``, a malformed or unreachable address, CUDA on Ray."""
    if address is not None and engine != "ray":
        raise BenchError(f"--address {address} needs --engine ray (the serial engine runs here)")
    if engine != "ray":
        return
    if not available():
        raise BenchError(MISSING)
    if device != "cpu":
        raise BenchError("--engine ray runs on the workers' CPUs; --device cuda is for the serial engine")
    if address is not None:
        check_address(address)


def check_address(address: str) -> None:
    """``auto``, or ``HOST:PORT`` where something listens (a BenchError naming the address otherwise)."""
    if address == "auto":
        return
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BenchError(f"--address {address!r}: expected auto or HOST:PORT (the head's GCS port, e.g. "
                         "10.0.0.1:6379)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_SECONDS).close()
    except OSError as exc:
        raise BenchError(f"--address {address}: no Ray head answers there ({exc.strerror or exc}); start "
                         f"one with `ray start --head --port {port}`") from None


def runtime_env(address: str | None) -> dict:
    """Workers' environment: OpenMP pinned to one thread, the driver's ``PYTHONPATH`` (this checkout
    first) and ``SPARSEBENCH_FAMILIES``; on a cluster also ``bench`` and ``predictors`` themselves."""
    import bench
    import predictors

    roots = [Path(m.__file__).resolve().parent for m in (bench, predictors)]
    path = [str(roots[0].parent)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = {"OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(dict.fromkeys(path))}
    if os.environ.get("SPARSEBENCH_FAMILIES"):
        env["SPARSEBENCH_FAMILIES"] = os.environ["SPARSEBENCH_FAMILIES"]
    out: dict = {"env_vars": env}
    if address is not None:
        out["py_modules"] = [str(r) for r in roots]
    return out


def connect(ray, address: str | None) -> None:
    """Start Ray here (``address`` None: one worker per usable core) or join the cluster at ``address``."""
    from bench.env import usable_cores

    common = {"log_to_driver": False, "logging_level": logging.ERROR, "runtime_env": runtime_env(address)}
    try:
        if address is None:
            ray.init(address="local", num_cpus=usable_cores(), include_dashboard=False, **common)
        else:
            ray.init(address=address, **common)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        what = "start a local Ray instance" if address is None else f"join the Ray cluster at {address}"
        raise BenchError(f"could not {what}: {one_line(exc)}") from None


def one_line(exc: BaseException) -> str:
    """``Type: message`` of the error a task raised (``RayTaskError.cause``), first line only."""
    cause = getattr(exc, "cause", None) or exc
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[0] if text else ''}".rstrip(": ")


def cluster_line(ray) -> str:
    """``4 workers (CPUs) on 2 nodes``: what the sweep runs on."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    cpus = int(sum(n.get("Resources", {}).get("CPU", 0) for n in nodes))
    return f"{cpus} worker{'s' if cpus != 1 else ''} (CPUs) on {len(nodes)} node{'s' if len(nodes) != 1 else ''}"


def run_cases(preps: dict, cases: list[Case], settings: Settings, on_result: OnResult, on_error: OnError,
              address: str | None = None, show_progress: bool = True, on_start=None) -> None:
    """Measure ``cases`` on Ray (module docstring); ``preps``: dataset -> Prepared of every case's
    dataset. ``on_start(line)`` is told what the sweep runs on once connected. Ray is shut down (the
    driver leaves a cluster it joined) at the end, on an error and on an interrupt."""
    if not cases:
        return
    try:
        import ray
    except ImportError:
        raise BenchError(MISSING) from None
    from bench.results.run_folder import code_version

    connect(ray, address)
    try:
        if on_start is not None:
            on_start(cluster_line(ray))
        _sweep(ray, preps, cases, settings, on_result, on_error, code_version(), show_progress)
    finally:
        ray.shutdown()


def _sweep(ray, preps, cases, settings, on_result, on_error, code, show_progress) -> None:
    from ray.exceptions import RayError

    task = {"num_cpus": 1, "max_retries": RETRIES, "retry_exceptions": True}
    state_task, case_task = ray.remote(**task)(fit_state), ray.remote(**task)(run_case)
    boxes = {ds: [ray.put(preps[ds])] for ds in dict.fromkeys(c.dataset for c in cases)}
    p = plan(cases)
    states = {key: state_task.remote(boxes[key[0]], case, settings) for key, case in p.states.items()}
    pending = {case_task.remote(boxes[c.dataset], c, states.get(p.needs[c]), settings): c for c in cases}
    try:
        with Step("ray", total=len(cases), unit="configurations", enabled=show_progress) as step:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                case = pending.pop(done[0])
                try:
                    result = ray.get(done[0])
                except RayError as exc:
                    on_error(case, _failure(ray, exc, states.get(p.needs[case]), p.needs[case], p))
                else:
                    if result["code"] != code:
                        on_error(case, f"the worker on {result['host']} runs code version {result['code']}, "
                                 f"the driver {code}: give every node this checkout")
                    else:
                        on_result(case, result)
                step.update(note=case.label())
    except BaseException:  # an interrupt: what finished was handed over, nothing more is started
        for ref in pending:
            try:
                ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - finished meanwhile, or Ray already going down
                pass
        raise


def _failure(ray, exc, state_ref, key, p) -> str:
    """Why a configuration's task failed: its own error, or that of the shared fit it depended on."""
    from ray.exceptions import RayError

    if state_ref is not None:
        try:
            ray.get(state_ref)
        except RayError as state_exc:
            return f"its shared fit ({p.states[key].name} trains it) failed: {one_line(state_exc)}"
    return one_line(exc)
