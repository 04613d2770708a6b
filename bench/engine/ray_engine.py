"""A sweep of configurations on Ray: a local instance by default, a cluster by address.

:func:`run_cases` puts each dataset's :class:`~bench.evaluation.prepared.Prepared` (data and gold) into
Ray's object store once, starts one task per piece of shared fitted state (:mod:`bench.engine.plan`)
and one task per few configurations (:func:`bench.engine.tasks.run_chunk`, :func:`bench.engine.plan.chunks`;
depending on its state's task), and hands every result to the caller as its task finishes
(``ray.wait``), so a caller that writes records loses none it was given when the driver is
interrupted. A task of several configurations that raises is split into tasks of one; a task of one
that raises is retried (:data:`RETRIES`, Ray's own retries), and if it fails again its configuration is
reported (``on_error``). Workers are checked to run the driver's code
(:func:`bench.results.run_folder.code_version`).

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
from bench.engine.plan import chunk_size, chunks, plan
from bench.engine.tasks import Settings, fit_state, run_chunk
from bench.errors import BenchError
from bench.progress import Step

MISSING = "--engine ray needs the 'ray' package: pip install 'sparsefinder-bench[ray]'"
RETRIES = 1  # a task that raises runs once more before it counts as failed (a lost worker: Ray's default)
PROBE_SECONDS = 5.0

#: ``on_result(case, result)``: one configuration's result of :func:`bench.engine.tasks.run_chunk`;
#: ``on_error(case, message)``: why it has none.
OnResult = Callable[[Case, dict], None]
OnError = Callable[[Case, str], None]


def available() -> bool:
    """Whether ``ray`` can be imported here (without importing it)."""
    return importlib.util.find_spec("ray") is not None


def choose_engine(option: str | None, profile_engine: str, device: str = "cpu",
                  cores: int | None = None) -> tuple[str, str | None]:
    """``(engine, why)``: the session's engine and, when the profile's choice is not taken, why.

    ``--engine`` (``option``) always wins. Otherwise the profile's
    ``engine``: ``ray`` on a CPU run where Ray is installed and at least two cores are usable (one
    worker per core: the independent configurations run side by side, each timed against the dense
    reference on its own worker); else ``serial``, with the reason (the console prints it).
    """
    if option is not None:
        return option, None
    if profile_engine != "ray":
        return "serial", None
    if cores is None:
        from bench.env import usable_cores

        cores = usable_cores()
    if device != "cpu":
        why = "--device cuda runs serially"
    elif not available():
        why = "ray is not installed"
    elif cores < 2:
        why = f"{cores} usable core"
    else:
        return "ray", None
    return "serial", f"the profile's engine is ray, but {why}: serial"


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


def cluster(ray) -> tuple[int, int]:
    """``(CPUs, nodes)`` of the Ray cluster the driver is connected to (alive nodes only)."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return int(sum(n.get("Resources", {}).get("CPU", 0) for n in nodes)), len(nodes)


def cluster_line(cpus: int, nodes: int) -> str:
    """``4 workers (CPUs) on 2 nodes``: what the sweep runs on."""
    return f"{cpus} worker{'s' if cpus != 1 else ''} (CPUs) on {nodes} node{'s' if nodes != 1 else ''}"


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
        cpus, nodes = cluster(ray)
        size = chunk_size(len(cases), cpus)
        if on_start is not None:
            on_start(cluster_line(cpus, nodes) + (f", {size} configurations a task" if size > 1 else ""))
        sweep = _Sweep(ray, preps, cases, settings, on_result, on_error, code_version())
        sweep.run(size, show_progress)
    finally:
        ray.shutdown()


def code_mismatch(result: dict, driver_code: str) -> str:
    """The one line for a worker whose code version is not the driver's: both versions and where each
    imports ``bench`` from, and the usual cause when both are on this machine."""
    from bench.engine.tasks import code_path

    worker_path, driver_path = result.get("code_path", "?"), code_path()
    hint = "give every node this checkout"
    if worker_path != driver_path:
        hint += (" (one side imports the installed package: a stale build/ folder in the checkout goes into the "
                 "wheel tox installs; delete build/ and *.egg-info, then run tox again)")
    return (f"the worker on {result['host']} runs code version {result['code']} from {worker_path}, the driver "
            f"{driver_code} from {driver_path}: {hint}")


class _Sweep:
    """The driver's loop: tasks submitted, results handed over as they finish, failed chunks split."""

    def __init__(self, ray, preps, cases, settings, on_result, on_error, code):
        from ray.exceptions import RayError

        self.ray, self.settings, self.code, self.RayError = ray, settings, code, RayError
        self.on_result, self.on_error = on_result, on_error
        base = {"num_cpus": 1, "max_retries": RETRIES}
        # A task of one configuration is retried when it raises; a chunk that raises is split instead,
        # so only the configuration at fault is measured again (and named if it fails again).
        self.single = ray.remote(**base, retry_exceptions=True)(run_chunk)
        self.chunk = ray.remote(**base, retry_exceptions=False)(run_chunk)
        self.boxes = {ds: [ray.put(preps[ds])] for ds in dict.fromkeys(c.dataset for c in cases)}
        self.plan = plan(cases)
        state_task = ray.remote(**base, retry_exceptions=True)(fit_state)
        self.states = {key: state_task.remote(self.boxes[key[0]], case, settings)
                       for key, case in self.plan.states.items()}
        self.pending: dict = {}

    def submit(self, cases: list[Case]) -> None:
        state = self.states.get(self.plan.needs[cases[0]])
        task = self.single if len(cases) == 1 else self.chunk
        self.pending[task.remote(self.boxes[cases[0].dataset], cases, state, self.settings)] = cases

    def run(self, size: int, show_progress: bool) -> None:
        for group in chunks(self.plan, size):
            self.submit(group)
        total = len(self.plan.needs)
        try:
            with Step("ray", total=total, unit="configurations", enabled=show_progress) as step:
                while self.pending:
                    done, _ = self.ray.wait(list(self.pending), num_returns=1)
                    cases = self.pending.pop(done[0])
                    step.update(self.settle(done[0], cases), note=cases[-1].label())
        except BaseException:  # an interrupt: what finished was handed over, nothing more is started
            for ref in self.pending:
                try:
                    self.ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - finished meanwhile, or Ray already going down
                    pass
            raise

    def settle(self, ref, cases: list[Case]) -> int:
        """Hand over the results of a finished task; the number of configurations it settled."""
        try:
            results = self.ray.get(ref)
        except self.RayError as exc:
            if len(cases) > 1:
                for case in cases:  # measured again one by one: the others land, the culprit is named
                    self.submit([case])
                return 0
            self.on_error(cases[0], self._failure(exc, cases[0]))
            return 1
        for case, result in zip(cases, results):
            if result["code"] != self.code:
                self.on_error(case, code_mismatch(result, self.code))
            else:
                self.on_result(case, result)
        return len(cases)

    def _failure(self, exc, case: Case) -> str:
        """Why a configuration's task failed: its own error, or that of the shared fit it depended on."""
        key = self.plan.needs[case]
        if key is not None:
            try:
                self.ray.get(self.states[key])
            except self.RayError as state_exc:
                return f"its shared fit ({self.plan.states[key].name} trains it) failed: {one_line(state_exc)}"
        return one_line(exc)
