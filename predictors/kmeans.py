"""Batched k-means in PyTorch: ``G`` independent problems (one per head) solved together.

Lloyd's algorithm with k-means++ seeding. For each group ``g`` and points ``x[g, :N]`` it looks for
centroids ``c[g, :k]`` minimising ``sum_i min_c ||x_i - c||^2``. Each iteration assigns every point to
its nearest centroid (least squared distance, ties to the lowest index), then moves each
centroid to the mean of its points; a centroid that loses all its points stays where it was. It stops
after ``iters`` iterations or as soon as no assignment changes, in which case every centroid is the
mean of its points and every point is assigned to its nearest centroid (a fixed point).

Deterministic: the only randomness is the seeding, drawn on the CPU from the given seed or generator,
and the updates sum one-hot products rather than scatter-adding (whose float sums are not ordered
on GPUs). Same inputs and seed give bit-identical centroids on the same machine.
"""

from __future__ import annotations

import torch

INITS = ("kmeans++", "random")
# Points per chunk in the assignment and update steps: bounds memory at CHUNK x k per group.
CHUNK = 65536
# Problems with at most this many (point, centroid, dimension) triples per call are computed with
# explicit differences and broadcast sums: a batched matrix product costs more than it saves there.
SMALL = 1 << 18


def _generator(seed) -> torch.Generator:
    if isinstance(seed, torch.Generator):
        return seed
    if seed is None or isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"kmeans: seed must be an int or a torch.Generator, got {seed!r}")
    return torch.Generator().manual_seed(seed)


def sq_distances(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Squared distances ``||x_i - c_j||^2`` of ``x`` ``[G, N, r]`` to ``c`` ``[G, k, r]``: ``[G, N, k]``.

    Small problems (``G N k r <= SMALL``) sum squared differences; others use
    ``||x||^2 - 2 x.c + ||c||^2`` (clamped at 0), whose cost is ``2 N k r``.
    """
    if x.shape[0] * x.shape[1] * c.shape[1] * x.shape[2] <= SMALL:
        return (x[:, :, None, :] - c[:, None, :, :]).pow(2).sum(-1)
    d = (x * x).sum(-1, keepdim=True) - 2.0 * torch.bmm(x, c.transpose(1, 2).contiguous()) + (c * c).sum(-1)[:, None, :]
    return d.clamp_(min=0.0)


def assign(x: torch.Tensor, centroids: torch.Tensor, top: int = 1) -> torch.Tensor:
    """Indices of the ``top`` nearest centroids of each point, nearest first: int64 ``[G, N, top]``.

    ``x`` ``[G, N, r]``, ``centroids`` ``[G, k, r]``; ties go to the lowest centroid index.
    """
    k = centroids.shape[1]
    if not 1 <= top <= k:
        raise ValueError(f"assign: top={top} must be between 1 and the number of centroids k={k}")
    out = []
    for x_part in x.split(CHUNK, dim=1):
        d = sq_distances(x_part, centroids)
        if top == 1:
            out.append(d.argmin(-1, keepdim=True))
        else:
            # A stable sort makes ties deterministic (lowest index first), unlike topk.
            out.append(d.sort(dim=-1, stable=True).indices[..., :top])
    return torch.cat(out, dim=1) if out else torch.zeros(x.shape[0], 0, top, dtype=torch.long)


def _check(x, k, valid):
    if x.ndim != 3:
        raise ValueError(f"kmeans: x must be [G, N, r], got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"kmeans: x must be a float tensor, got {x.dtype}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"kmeans: k must be a positive int, got {k!r}")
    g, n, _ = x.shape
    if valid is None:
        counts = torch.full((g,), n, dtype=torch.long)
    else:
        if valid.shape != (g, n) or valid.dtype != torch.bool:
            raise ValueError(f"kmeans: valid must be bool [G={g}, N={n}], got {valid.dtype} {tuple(valid.shape)}")
        counts = valid.sum(-1).cpu()
    few = (counts < k).nonzero().flatten().tolist()
    if few:
        raise ValueError(f"kmeans: k={k} clusters but group {few[0]} has only {int(counts[few[0]])} points "
                         f"({len(few)} of {g} groups have fewer than k); lower k or give more data")


def _init(x, k, w, gen, init):
    """Seed centroids ``[G, k, r]``: k-means++ (``D^2`` sampling) or ``k`` distinct random points."""
    g, n, _ = x.shape
    wc = w.detach().to("cpu", torch.float64)
    rows = torch.arange(g)
    if init == "random":
        # k distinct valid points per group, uniformly: the k smallest of iid uniforms.
        keys = torch.rand(g, n, generator=gen, dtype=torch.float64).masked_fill(wc == 0, 2.0)
        idx = keys.argsort(dim=-1, stable=True)[:, :k]
        return x[rows[:, None], idx.to(x.device)]
    first = torch.multinomial(wc, 1, generator=gen).flatten()
    chosen = [x[rows, first.to(x.device)]]  # list of [G, r]
    best = None
    for _ in range(1, k):
        d = sq_distances(x, chosen[-1][:, None, :])[..., 0]
        best = d if best is None else torch.minimum(best, d)
        p = torch.where(wc > 0, best.detach().to("cpu", torch.float64), 0.0)
        # A group whose valid points all coincide with chosen centroids: fall back to uniform.
        p = torch.where(p.sum(-1, keepdim=True) > 0, p, wc)
        nxt = torch.multinomial(p, 1, generator=gen).flatten()
        chosen.append(x[rows, nxt.to(x.device)])
    return torch.stack(chosen, dim=1)


def _update(x, w, labels, old):
    """Weighted mean of each cluster's points; empty clusters keep their old centroid."""
    g, _, r = x.shape
    k = old.shape[1]
    sums = torch.zeros(g, k, r, dtype=x.dtype, device=x.device)
    counts = torch.zeros(g, k, dtype=x.dtype, device=x.device)
    for x_part, w_part, l_part in zip(x.split(CHUNK, 1), w.split(CHUNK, 1), labels.split(CHUNK, 1)):
        onehot = torch.nn.functional.one_hot(l_part, k).to(x.dtype) * w_part[..., None]  # [G, n, k]
        if g * onehot.shape[1] * k * r <= SMALL:
            sums += (onehot[..., None] * x_part[:, :, None, :]).sum(1)
        else:
            sums += torch.bmm(onehot.transpose(1, 2).contiguous(), x_part)
        counts += onehot.sum(1)
    return torch.where(counts[..., None] > 0, sums / counts.clamp(min=1)[..., None], old)


def kmeans(x: torch.Tensor, k: int, iters: int = 25, seed: int | torch.Generator = 0, init: str = "kmeans++",
           valid: torch.Tensor | None = None) -> torch.Tensor:
    """Cluster each of ``G`` point sets into ``k`` clusters; see the module docstring.

    Parameters
    ----------
    x : float ``[G, N, r]``, ``G`` independent problems (heads) of ``N`` points in ``r`` dimensions
    k : number of clusters per group; an error if a group has fewer than ``k`` (valid) points
    iters : at most this many Lloyd iterations (0: the seeding only)
    seed : int or CPU ``torch.Generator``, the source of the seeding's randomness
    init : ``"kmeans++"`` (points drawn with probability proportional to the squared distance to the
        nearest centroid chosen so far) or ``"random"`` (``k`` distinct points, uniformly)
    valid : optional bool ``[G, N]``: only these points count (groups of different sizes)

    Returns
    -------
    centroids : ``[G, k, r]``, same dtype and device as ``x``
    """
    if init not in INITS:
        raise ValueError(f"kmeans: unknown init {init!r}; known: {', '.join(INITS)}")
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 0:
        raise ValueError(f"kmeans: iters must be an int >= 0, got {iters!r}")
    _check(x, k, valid)
    gen = _generator(seed)
    x = x.detach()
    if valid is None:
        w = torch.ones(x.shape[:2], dtype=x.dtype, device=x.device)
    else:
        # Invalid points may hold anything (even inf): zero them so they cannot reach any sum.
        x = x.masked_fill(~valid[..., None], 0.0)
        w = valid.to(x.dtype)
    centroids = _init(x, k, w, gen, init)
    labels = None
    for _ in range(iters):
        new = assign(x, centroids)[..., 0]
        # Invalid points may land anywhere; they carry weight 0, so only valid ones decide convergence.
        if labels is not None and not bool(((new != labels) & (w > 0)).any()):
            break
        labels = new
        centroids = _update(x, w, labels, centroids)
    return centroids
