"""What the FAISS twins share: the lazy import, devices, thread pinning, flat indexes and k-means.

Importing this module does not import ``faiss``; :func:`import_faiss` does, at fit or predict time.

Threads
-------
Every FAISS call of the twins runs inside :func:`faiss_threads` (one OpenMP thread by default,
:data:`THREADS`), which restores the previous setting on exit. The twins solve many small per-head
problems (hundreds to thousands of points, ``k <= 32`` centroids): there FAISS's default of one thread
per core made k-means 15-70x slower on a 2-core machine than one thread, because every small call
wakes and synchronises the whole pool (and competes with torch's own pool).

Devices
-------
``device="cpu"``: k-means assigns with an ``IndexFlatL2``, and the prediction searches call the
brute-force kernels that ``IndexFlatL2`` / ``IndexFlatIP`` search with (``knn_L2sqr`` /
``knn_inner_product``; see :func:`search`). ``device="cuda"``: ``GpuIndexFlatL2`` / ``GpuIndexFlatIP``
built on one process-wide ``StandardGpuResources`` (:func:`gpu_resources`), for k-means and searches.
Either way one index per ``(device, metric, dim)`` is kept (:func:`flat_index`) and ``reset()`` between
uses, never rebuilt per head. ``device="cuda"`` is refused up front (:class:`FaissDeviceError`) when the
installed FAISS has no GPU support or torch sees no CUDA device. The torch parts the twins share with
their torch twins (normalisation, projections, k-means++ seeding) run on the CPU.

Parity with the torch twins
---------------------------
:func:`faiss_kmeans` starts ``faiss.Clustering`` from the torch twin's own k-means++ seeding (same
generator, same draws, so the generator stream of the following layers is the same too), disables
FAISS's subsampling (``max_points_per_centroid``) and runs the same number of Lloyd iterations, not
spherical. Two rules of FAISS differ from :func:`predictors.kmeans.kmeans` and are undone:

* FAISS always runs ``niter`` iterations; the torch k-means stops when no assignment changes. At such a
  fixed point further iterations change nothing, so the result is the same; to save the time, the
  iterations run in chunks of :data:`CHECK_EVERY` and stop when a chunk leaves the centroids unchanged.
* FAISS refills an empty cluster by splitting a big one (``split_clusters``); the torch k-means leaves an
  empty cluster's centroid where it was. When FAISS reports a split, that iteration is redone with the
  torch rule: assignment by the FAISS index, means in numpy, empty clusters kept.

What remains is float rounding: FAISS and torch sum in different orders (centroids agree to a few ulp,
measured ``2e-7``) and compute distances and inner products with different kernels. An assignment, a
bucket (argmax) or a routing top-m can therefore differ only where two candidates are tied to within
rounding (relative ``~1e-6``); the tests assert exact equality of all codes on their seeded data and
real MiniLM heads, and bound the disagreement by the tie margin otherwise.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch

from predictors.errors import PredictorError
from predictors.kmeans import kmeans as torch_kmeans

INSTALL_HINT = "pip install faiss-cpu"
DEVICES = ("cpu", "cuda")
# OpenMP threads of FAISS inside the twins' fit and predict (see the module docstring).
THREADS = 1
# Lloyd iterations per faiss.Clustering call before checking for a fixed point.
CHECK_EVERY = 5


class FaissMissingError(PredictorError):
    """The FAISS backend was asked for but ``faiss`` is not installed."""


class FaissDeviceError(PredictorError):
    """``device="cuda"`` was asked for but FAISS has no GPU support or torch sees no CUDA device."""


def import_faiss():
    """The ``faiss`` module; :class:`FaissMissingError` (naming the pip command) when it is missing."""
    try:
        import faiss
    except ImportError as exc:
        raise FaissMissingError(f"the FAISS backend needs the faiss package, which is not importable ({exc}); "
                                f"install it with `{INSTALL_HINT}` (or faiss-gpu for device='cuda')") from None
    return faiss


def gpu_problem() -> str | None:
    """Why ``device="cuda"`` cannot work here, or ``None`` when it can."""
    faiss = import_faiss()
    if not hasattr(faiss, "StandardGpuResources"):
        return ("the installed faiss has no GPU support (a faiss-cpu build); install faiss-gpu "
                "for device='cuda', or use device='cpu'")
    if not torch.cuda.is_available():
        return "torch sees no CUDA device; use device='cpu'"
    if faiss.get_num_gpus() < 1:
        return "faiss sees no GPU (faiss.get_num_gpus() == 0); use device='cpu'"
    return None


def check_device(device: str, who: str) -> str:
    """Validate a twin's ``device``: ``"cpu"``, or ``"cuda"`` when FAISS and torch can both use a GPU."""
    if device not in DEVICES:
        raise PredictorError(f"{who}: unknown device {device!r}; known: {', '.join(DEVICES)}")
    if device == "cuda":
        problem = gpu_problem()
        if problem:
            raise FaissDeviceError(f"{who}: device='cuda' is not available: {problem}")
    return device


@contextlib.contextmanager
def faiss_threads(n: int = THREADS):
    """Run the block with FAISS pinned to ``n`` OpenMP threads; the previous setting is restored on exit.

    Yields the ``faiss`` module (importing it, or raising :class:`FaissMissingError`).
    """
    faiss = import_faiss()
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield faiss
    finally:
        faiss.omp_set_num_threads(previous)


# -- indexes ---------------------------------------------------------------------------------------------
_GPU_RESOURCES: list = []
_INDEXES: dict = {}


def gpu_resources():
    """The process-wide ``faiss.StandardGpuResources``, created on first use and then reused."""
    if not _GPU_RESOURCES:
        _GPU_RESOURCES.append(import_faiss().StandardGpuResources())
    return _GPU_RESOURCES[0]


def flat_index(metric: str, dim: int, device: str = "cpu"):
    """An empty exact flat index (``metric`` ``"l2"`` or ``"ip"``) of dimension ``dim`` on ``device``.

    One index per ``(device, metric, dim)`` is kept for the process and ``reset()`` on every call, so a
    loop over heads reuses it (on a GPU: its allocations). Not for use from several threads at once.
    """
    key = (device, metric, int(dim))
    index = _INDEXES.get(key)
    if index is None:
        faiss = import_faiss()
        if device == "cuda":
            cfg = faiss.GpuIndexFlatConfig()
            cfg.device = torch.cuda.current_device()
            cls = faiss.GpuIndexFlatL2 if metric == "l2" else faiss.GpuIndexFlatIP
            index = cls(gpu_resources(), int(dim), cfg)
        else:
            index = faiss.IndexFlatL2(int(dim)) if metric == "l2" else faiss.IndexFlatIP(int(dim))
        _INDEXES[key] = index
    index.reset()
    return index


# The GPU k-selection handles at most this many neighbours per query.
GPU_MAX_K = 2048


def search(metric: str, base: np.ndarray, queries: np.ndarray, k: int, device: str = "cpu",
           out: np.ndarray | None = None) -> np.ndarray:
    """Ids ``int64 [Q, k]`` of the ``k`` nearest ``base`` rows of each query, nearest first.

    ``metric="l2"``: smallest ``||q - b||^2``; ``"ip"``: largest ``q . b``. ``base`` ``[B, d]`` and
    ``queries`` ``[Q, d]`` are C-contiguous float32 arrays, ``k <= B``; ``out`` (optional, C-contiguous
    int64 ``[Q, k]``) receives the ids.

    On the CPU this calls FAISS's brute-force kernels (``knn_L2sqr`` / ``knn_inner_product``, what
    ``IndexFlatL2`` / ``IndexFlatIP`` search with) directly: the twins' searches are small and many,
    and an index's add/search wrappers cost more than the search. On a GPU it adds ``base`` to the
    reused ``GpuIndexFlat`` of :func:`flat_index`; ``k`` above :data:`GPU_MAX_K` (beyond FAISS-GPU's
    k-selection) is searched on the CPU instead.
    """
    if metric not in ("l2", "ip"):
        raise ValueError(f"search: metric must be 'l2' or 'ip', got {metric!r}")
    queries = np.ascontiguousarray(queries, dtype=np.float32)  # no copy when it already is
    base = np.ascontiguousarray(base, dtype=np.float32)
    nq, d = queries.shape
    nb = base.shape[0]
    if out is None:
        out = np.empty((nq, k), dtype=np.int64)
    elif out.shape != (nq, k) or out.dtype != np.int64 or not out.flags.c_contiguous:
        raise ValueError(f"search: out must be C-contiguous int64 {(nq, k)}, got {out.dtype} {out.shape}")
    if device == "cuda" and k <= GPU_MAX_K:
        index = flat_index(metric, d, device)
        index.add(base)
        _, ids = index.search(queries, k)
        out[...] = ids
        return out
    faiss = import_faiss()
    dist = np.empty((nq, k), dtype=np.float32)
    kernel = faiss.knn_L2sqr if metric == "l2" else faiss.knn_inner_product
    kernel(faiss.swig_ptr(queries), faiss.swig_ptr(base), d, nq, nb, k, faiss.swig_ptr(dist), faiss.swig_ptr(out))
    return out


def as_float32(x: torch.Tensor) -> np.ndarray:
    """A C-contiguous float32 numpy array of a tensor (a view when it already is one, on the CPU)."""
    return np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())


# -- k-means -------------------------------------------------------------------------------------------------
@dataclass
class KMeansInfo:
    """How each group's FAISS k-means ran: Lloyd iterations done, and iterations redone because FAISS
    split a cluster that had emptied (int64 ``[G]`` each)."""

    iterations: torch.Tensor
    empty_fixes: torch.Tensor


def _clustering_run(faiss, x: np.ndarray, centroids: np.ndarray, niter: int, index):
    """``niter`` Lloyd iterations of ``faiss.Clustering`` from ``centroids``.

    Returns the new centroids and the first iteration (0-based) in which FAISS split a cluster, or
    ``None``.
    """
    n, d = x.shape
    k = centroids.shape[0]
    clus = faiss.Clustering(d, k)
    clus.niter = niter
    clus.nredo = 1
    clus.spherical = False
    clus.update_index = False
    clus.verbose = False
    clus.max_points_per_centroid = n  # k * n >= n: never subsample
    clus.min_points_per_centroid = 1  # no warning below 39 points per centroid
    faiss.copy_array_to_vector(np.ascontiguousarray(centroids).ravel(), clus.centroids)
    clus.train(x, index)
    stats = clus.iteration_stats
    split = next((i for i in range(stats.size()) if stats.at(i).nsplit > 0), None)
    return faiss.vector_to_array(clus.centroids).reshape(k, d), split


def _torch_rule_step(x: np.ndarray, centroids: np.ndarray, index) -> np.ndarray:
    """One Lloyd iteration with the torch k-means's rule for empty clusters (they stay put)."""
    k = centroids.shape[0]
    index.reset()
    index.add(np.ascontiguousarray(centroids))
    _, labels = index.search(x, 1)
    labels = labels[:, 0]
    counts = np.bincount(labels, minlength=k)
    sums = np.zeros_like(centroids)
    np.add.at(sums, labels, x)
    means = sums / np.maximum(counts, 1)[:, None].astype(np.float32)
    return np.where(counts[:, None] > 0, means, centroids).astype(np.float32)


def _lloyd(faiss, x: np.ndarray, centroids: np.ndarray, iters: int, index) -> tuple[np.ndarray, int, int]:
    n, k = x.shape[0], centroids.shape[0]
    # n == k: the k-means++ seeds are the points themselves, already a fixed point (FAISS would instead
    # copy the points in their own order).
    if iters == 0 or n == k:
        return centroids, 0, 0
    done = fixes = 0
    while done < iters:
        step = min(CHECK_EVERY, iters - done)
        new, split = _clustering_run(faiss, x, centroids, step, index)
        if split is not None:
            if split > 0:
                centroids, _ = _clustering_run(faiss, x, centroids, split, index)
            centroids = _torch_rule_step(x, centroids, index)
            done += split + 1
            fixes += 1
            continue
        done += step
        if np.array_equal(new, centroids):  # a fixed point: the torch k-means would have stopped here
            break
        centroids = new
    return centroids, done, fixes


def faiss_kmeans(x: torch.Tensor, k: int, iters: int, seed, device: str = "cpu",
                 init: torch.Tensor | None = None) -> tuple[torch.Tensor, KMeansInfo]:
    """:func:`predictors.kmeans.kmeans` of each of ``G`` point sets, with ``faiss.Clustering``.

    Parameters
    ----------
    x : float ``[G, N, r]``, ``G`` independent problems (heads)
    k, iters : clusters per group, at most this many Lloyd iterations
    seed : int or CPU ``torch.Generator``; the seeding is the torch k-means's own k-means++
        (``kmeans(x, k, iters=0, seed=seed)``), so it draws exactly what the torch twin draws
    device : ``"cpu"`` or ``"cuda"`` (the assignment index; see the module docstring)
    init : optional ``[G, k, r]`` initial centroids instead of the k-means++ seeding (nothing is drawn)

    Returns
    -------
    centroids : float32 ``[G, k, r]`` on the CPU, and a :class:`KMeansInfo`

    Raises ``ValueError`` (as the torch k-means) when a group has fewer than ``k`` points.
    """
    if init is None:
        init = torch_kmeans(x, k, iters=0, seed=seed)
    g, _, r = x.shape
    xs = as_float32(x)
    out = as_float32(init).copy()
    iterations = torch.zeros(g, dtype=torch.long)
    fixes = torch.zeros(g, dtype=torch.long)
    faiss = import_faiss()
    index = flat_index("l2", r, device)
    for i in range(g):
        try:
            out[i], iterations[i], fixes[i] = _lloyd(faiss, xs[i], out[i], iters, index)
        except RuntimeError as exc:  # FAISS refuses NaN / inf input
            raise ValueError(f"faiss k-means of group {i}: {exc}") from None
    return torch.from_numpy(out), KMeansInfo(iterations=iterations, empty_fixes=fixes)


# -- the twins' common constructor ---------------------------------------------------------------------------
class FaissTwin:
    """Mixin placed before a torch family class: ``backend = "faiss"`` and a keyword-only ``device``.

    ``device`` is not a name parameter: a FAISS twin on the GPU has the same name as on the CPU (and as
    its torch twin), so results stay comparable by name, with the backend and device recorded beside.
    """

    backend = "faiss"

    def __init__(self, seed: int = 0, *, device: str = "cpu", **values):
        super().__init__(seed=seed, **values)
        self.device = check_device(device, self.family)

    def __repr__(self):
        return f"<{type(self).__name__} {self.name} device={self.device}>"
