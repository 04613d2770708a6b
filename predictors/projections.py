"""Learned low-rank projections of queries and keys (Sparsefinder), and their hinge-loss training.

For each layer and query head, two linear maps ``W_q, W_k`` (``D -> r``, no bias; one shared map
``W_q = W_k`` with ``shared=True``) send queries and keys to ``r`` dimensions, where a query should lie
close to the keys it attends to and far from the others:

    q'_i = q_i W_q,   k'_j = k_j W_k,
    loss_i = relu(omega + sum_{j in P_i} ||q'_i - k'_j||^2 - sum_{l in N_i} ||q'_i - k'_l||^2)

with ``P_i`` the gold keys of query ``i`` (the entmax support) and ``N_i`` a fresh uniform sample,
without replacement, of ``|P_i|`` *valid non-gold* keys of the same query: never a padded key and,
for causal data, never a future key. A query with fewer such keys than ``|P_i|`` takes all of them.

Training follows the paper: Adam (lr 1e-3), 3 epochs over the valid queries of the fit samples,
minibatches of ``batch_queries`` queries taken together with all their heads, the gradient clipped to
norm 1.0. Heads are independent problems trained in one batch: the loss is the sum over heads of the
mean over the batch's queries, the gradient norm is clipped per head and Adam is elementwise, so each
head follows the path it would follow alone. Gold pairs are read from the gold's CSR and negatives
drawn by :func:`predictors.negatives.sample_negatives_csr`, so no step builds a ``[batch, n]`` tensor. Everything random
(initialisation, query order, negatives) comes from one CPU generator per layer seeded from ``seed``:
the same seed gives bit-identical projections. Training runs on the CPU with one intra-op thread
(its operations are too small to share), restoring the caller's setting afterwards.

:func:`cached_projections` memoises the training in-process, so a sweep over thresholds, bucket or
cluster counts trains each ``(data, r, shared, seed)`` once. :class:`ProjectedPredictor` is the base
of the Sparsefinder families (``sf-dist``, ``sf-quant``, ``sf-kmeans``).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from predictors import memo
from predictors.base import COMMON, Param, Predictor
from predictors.data import AttentionData, LayerView
from predictors.errors import PredictorError
from predictors.negatives import sample_negatives_csr
from predictors.support import Gold, LayerGold

MARGIN = 1.0


# -- the projections ------------------------------------------------------------------------------------
@dataclass
class Projections:
    """Learned maps of every layer and query head.

    Attributes
    ----------
    wq, wk : float32 ``[L, H, D, r]``; the same tensor when ``shared``
    r, shared, seed : how they were trained
    losses : float64 ``[L, H, epochs]``, mean hinge loss per valid query in each epoch (fresh negatives)
    seconds : wall-clock training time
    descriptor : what produced them (data descriptor and every training setting)
    """

    wq: torch.Tensor
    wk: torch.Tensor
    r: int
    shared: bool
    seed: int
    losses: torch.Tensor
    seconds: float
    descriptor: dict = field(default_factory=dict)

    @property
    def num_layers(self) -> int:
        return self.wq.shape[0]

    @property
    def num_heads(self) -> int:
        return self.wq.shape[1]

    def apply(self, view: LayerView, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Project one layer: ``q_proj = q W_q``, ``k_proj = k W_k`` per head.

        ``view.q``, ``view.k``: ``[S, H, T, D]`` (key heads expanded). Returns float32 ``[S, H, T, r]``
        each; padding positions are set to 0 (padding may hold anything, even NaN).
        """
        if not 0 <= layer < self.num_layers:
            raise PredictorError(f"projections cover layers 0..{self.num_layers - 1}, asked for layer {layer}")
        _, nh, t, d = view.q.shape
        if (nh, d) != tuple(self.wq.shape[1:3]):
            raise PredictorError(f"projections are for H={self.num_heads} heads of dimension "
                                 f"D={self.wq.shape[2]}; the view has H={nh}, D={d}")
        dev = view.q.device
        valid = (torch.arange(t, device=dev)[None, :] < view.lengths.to(dev)[:, None])[:, None, :, None]
        qp = torch.matmul(view.q.float(), self.wq[layer].to(dev)[None])
        kp = torch.matmul(view.k.float(), self.wk[layer].to(dev)[None])
        return qp.masked_fill(~valid, 0.0), kp.masked_fill(~valid, 0.0)


def projection_flops(n: int, d: int, r: int) -> float:
    """FLOPs of projecting ``n`` queries and ``n`` keys of one head from ``d`` to ``r`` dims: ``4 n d r``."""
    return 4.0 * n * d * r


def projected_points(proj: Projections, data: AttentionData, layer: int) -> torch.Tensor:
    """The union of the valid projected queries and keys of ``data`` per head: ``[H, N, r]``.

    ``N = 2 * sum(lengths)``; the order is queries of every sample, then keys of every sample.
    """
    qp, kp = proj.apply(data.layer(layer), layer)
    t = qp.shape[2]
    valid = torch.arange(t, device=qp.device)[None, :] < data.lengths.to(qp.device)[:, None]  # [S, T]
    pick = lambda x: x.permute(1, 0, 2, 3)[:, valid]  # [H, sum(lengths), r]
    return torch.cat([pick(qp), pick(kp)], dim=1)


def _layer_generator(seed: int, layer: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + layer) % (2 ** 63))


def _init_weight(nh: int, d: int, r: int, gen: torch.Generator) -> torch.Tensor:
    # The default of a torch Linear layer without bias: U(-1/sqrt(d), 1/sqrt(d)).
    bound = 1.0 / d ** 0.5
    return (torch.rand(nh, d, r, generator=gen) * 2.0 - 1.0) * bound


def _valid_rows(lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    s = torch.repeat_interleave(torch.arange(lengths.numel()), lengths)
    start = torch.cumsum(lengths, 0) - lengths
    return s, torch.arange(int(lengths.sum())) - start[s]


class _LayerBatches:
    """One layer's fit tensors laid out for fast minibatch gathers, and the hinge loss of a batch."""

    def __init__(self, view: LayerView, lg: LayerGold):
        s, nh, t, d = view.q.shape
        self.shape = (s, nh, t)
        self.q_tok = view.q.detach().float().cpu().permute(0, 2, 1, 3).reshape(s * t, nh * d)  # rows (s, i)
        self.k_flat = view.k.detach().float().cpu().reshape(s * nh * t, d)  # rows (s, h, j)
        self.lg = lg

    def hinge(self, s_b: torch.Tensor, i_b: torch.Tensor, wq: torch.Tensor, wk: torch.Tensor,
              generator: torch.Generator, margin: float = MARGIN) -> torch.Tensor:
        """Hinge loss of the queries ``(s_b, i_b)``, every head: ``[H, B]`` (see the module docstring)."""
        _, nh, t = self.shape
        lg = self.lg
        b = s_b.numel()
        heads = torch.arange(nh)
        # Rows in (h, b) order, so every pair list below is sorted by head.
        flat = ((s_b[None, :] * nh + heads[:, None]) * t + i_b[None, :]).flatten()
        cnt = lg.counts.flatten()[flat]
        row = torch.repeat_interleave(torch.arange(nh * b), cnt)
        first = torch.cumsum(cnt, 0) - cnt
        pos_cols = lg.cols[lg.rowptr[flat][row] + torch.arange(row.numel()) - first[row]].long()
        limit = lg.lengths[s_b]
        if lg.causal:
            limit = torch.minimum(limit, i_b + 1)
        neg_row, neg_cols = sample_negatives_csr(limit.repeat(nh), row, pos_cols, cnt, generator)

        q = self.q_tok.index_select(0, s_b * t + i_b).view(b, nh, -1).transpose(0, 1).contiguous()
        qp = torch.bmm(q, wq).reshape(nh * b, -1)  # [(h, b), r]

        def row_sums(rows, cols):
            h = rows // b
            keys = self.k_flat.index_select(0, (s_b[rows % b] * nh + h) * t + cols)
            d = (qp.index_select(0, rows) - _project_by_head(keys, h, wk)).pow(2).sum(-1)
            return torch.zeros(nh * b, dtype=d.dtype).index_add(0, rows, d)

        loss = torch.relu(margin + row_sums(row, pos_cols) - row_sums(neg_row, neg_cols))
        return loss.view(nh, b)


def _project_by_head(x: torch.Tensor, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``x[p] @ w[h[p]]`` for rows sorted by head: ``[P, r]``, one matrix product per head's segment."""
    counts = torch.bincount(h, minlength=w.shape[0]).tolist()
    parts = [seg @ w[i] for i, seg in enumerate(x.split(counts)) if counts[i]]
    return torch.cat(parts) if parts else x.new_zeros(0, w.shape[-1])


def hinge_loss(proj: Projections, data: AttentionData, gold: Gold, layer: int, seed: int = 0,
               batch_queries: int = 256) -> torch.Tensor:
    """Mean hinge loss per valid query of ``proj`` on one layer of ``data``: float64 ``[H]``.

    Negatives are drawn from ``seed``, so two projections compared with the same seed see the same
    negatives.
    """
    _check_gold(data, gold)
    batches = _LayerBatches(data.layer(layer), gold.layers[layer])
    s_rows, i_rows = _valid_rows(data.lengths)
    gen = torch.Generator().manual_seed(seed)
    total = torch.zeros(data.num_heads, dtype=torch.float64)
    with torch.no_grad(), _one_thread():
        for idx in torch.arange(s_rows.numel()).split(batch_queries):
            total += batches.hinge(s_rows[idx], i_rows[idx], proj.wq[layer], proj.wk[layer], gen).sum(1).double()
    return total / s_rows.numel()


@contextmanager
def _one_thread():
    """Run a block with one intra-op thread, then restore the caller's setting.

    Training is a long chain of tiny operations (``[H, batch, D]``): handing each to a thread pool
    costs more than it saves, and on a busy machine every hand-off can wait for a time slice.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _clip_per_head(params: list[torch.Tensor], max_norm: float) -> None:
    sq = sum(p.grad.pow(2).sum((1, 2)) for p in params)
    scale = (max_norm / (sq.sqrt() + 1e-6)).clamp(max=1.0)
    for p in params:
        p.grad.mul_(scale[:, None, None])


def _check_gold(data: AttentionData, gold: Gold) -> None:
    shape = (data.num_samples, data.num_heads, data.max_len)
    if len(gold.layers) != data.num_layers:
        raise PredictorError(f"gold has {len(gold.layers)} layers, the data {data.num_layers}: "
                             "fit on the gold of the same (fit) samples")
    for layer, lg in enumerate(gold.layers):
        if tuple(lg.counts.shape) != shape or not torch.equal(lg.lengths, data.lengths):
            raise PredictorError(f"gold of layer {layer} covers (samples, heads, tokens) = "
                                 f"{tuple(lg.counts.shape)}, the data {shape}: fit on the gold of the same "
                                 "(fit) samples")


def fit_projections(data: AttentionData, gold: Gold, r: int = 4, shared: bool = False, seed: int = 0,
                    epochs: int = 3, lr: float = 1e-3, batch_queries: int = 64, clip: float = 1.0,
                    margin: float = MARGIN, show_progress: bool = False) -> Projections:
    """Train the projections of every layer and head on ``data`` (the fit samples) and its ``gold``.

    Parameters
    ----------
    data : the fit part, ``q`` ``[S, L, H, T, D]``; gold : its exact gold (same samples)
    r : projected dimension; shared : one map for queries and keys
    seed : seeds initialisation, query order and negatives (per layer)
    epochs : passes over the valid queries (0: the random initial projections)
    lr, clip : Adam learning rate, per-head gradient norm clip
    batch_queries : queries per step (each with all its heads)
    margin : omega of the hinge loss

    Returns
    -------
    :class:`Projections`, with the mean loss of each epoch and the training time.
    """
    if r < 1 or batch_queries < 1 or epochs < 0:
        raise PredictorError(f"fit_projections: need r >= 1, batch_queries >= 1, epochs >= 0; "
                             f"got r={r}, batch_queries={batch_queries}, epochs={epochs}")
    _check_gold(data, gold)
    from tqdm.auto import tqdm

    start = time.perf_counter()
    nl, nh, d = data.num_layers, data.num_heads, data.head_dim
    s_rows, i_rows = _valid_rows(data.lengths)
    steps = -(-s_rows.numel() // batch_queries)
    wqs, wks = [], []
    losses = torch.zeros(nl, nh, epochs, dtype=torch.float64)
    with tqdm(total=nl * epochs * steps, desc="projections", disable=not show_progress) as bar, _one_thread():
        for layer in range(nl):
            gen = _layer_generator(seed, layer)
            wq = _init_weight(nh, d, r, gen).requires_grad_()
            wk = wq if shared else _init_weight(nh, d, r, gen).requires_grad_()
            params = [wq] if shared else [wq, wk]
            batches = _LayerBatches(data.layer(layer), gold.layers[layer])
            opt = torch.optim.Adam(params, lr=lr)
            for epoch in range(epochs):
                order = torch.randperm(s_rows.numel(), generator=gen)
                total = torch.zeros(nh, dtype=torch.float64)
                for idx in order.split(batch_queries):
                    loss = batches.hinge(s_rows[idx], i_rows[idx], wq, wk, gen, margin)
                    total += loss.detach().sum(1).double()
                    opt.zero_grad(set_to_none=False)
                    loss.mean(1).sum().backward()
                    _clip_per_head(params, clip)
                    opt.step()
                    bar.update()
                losses[layer, :, epoch] = total / s_rows.numel()
            wqs.append(wq.detach().clone())
            wks.append(wk.detach().clone())
    wq_all = torch.stack(wqs)
    return Projections(
        wq=wq_all, wk=wq_all if shared else torch.stack(wks), r=r, shared=shared, seed=seed, losses=losses,
        seconds=time.perf_counter() - start,
        descriptor={"data": data.descriptor, "r": r, "shared": shared, "seed": seed, "epochs": epochs,
                    "lr": lr, "batch_queries": batch_queries, "clip": clip, "margin": margin},
    )


# -- in-process cache --------------------------------------------------------------------------------------
# Keyed by (data, r, shared, seed, training options); predictors.memo moves entries between processes.
_CACHE: dict[tuple, Projections] = memo.table("projections")


def _data_key(data: AttentionData) -> str:
    from predictors.fingerprint import descriptor_key, tensor_digest

    if data.descriptor:
        return "d:" + descriptor_key(data.descriptor)
    # No descriptor (hand-built data): key by content, so two different tensors never share an entry.
    return "t:" + tensor_digest({"q": data.q, "k": data.k, "lengths": data.lengths,
                                 "causal": torch.tensor(data.causal)})


def cached_projections(data: AttentionData, gold: Gold, r: int = 4, shared: bool = False, seed: int = 0,
                       **train) -> Projections:
    """:func:`fit_projections`, memoised in-process by ``(data.descriptor, r, shared, seed, train)``.

    Data without a descriptor is keyed by a digest of its tensors instead. The returned object is
    shared between callers: treat it as read-only.
    """
    key = (_data_key(data), int(r), bool(shared), int(seed), tuple(sorted(train.items())))
    if key not in _CACHE:
        _CACHE[key] = fit_projections(data, gold, r=r, shared=shared, seed=seed, **train)
    return _CACHE[key]


def projection_key(r: int, shared: bool, seed: int) -> tuple:
    """:meth:`predictors.base.Predictor.shared_fit` of every predictor fitting the projections of
    ``(r, shared, seed)`` with the default training (the Sparsefinder families, ``reformer-proj``)."""
    return ("projections", int(r), bool(shared), int(seed))


def clear_projection_cache() -> None:
    """Forget every memoised :class:`Projections`."""
    _CACHE.clear()


# -- base of the Sparsefinder families ---------------------------------------------------------------------
PROJECTION_PARAMS = (
    Param("r", "r", int, 4, doc="projected dimension"),
    Param("proj", "", str, "sep", choices=("sep", "shared"),
          doc="separate maps for queries and keys (sep) or one shared map (shared)"),
)


class ProjectedPredictor(Predictor):
    """A predictor working on learned projections (see the module docstring).

    ``_fit`` trains (or reuses, through :func:`cached_projections`) the projections of the fit
    samples, then calls ``_fit_projected(data, gold)`` for what the family learns on top of them.
    Names leave out string choices at their default (``sf-kmeans-r4-k16-top2`` has separate maps,
    ``sf-kmeans-r4-shared-k16-top2`` a shared one); :func:`predictors.parse_name` fills them back in.
    """

    learned = True
    randomised = True  # the projections' initialisation, query order and negatives are seeded
    params = PROJECTION_PARAMS

    @property
    def name(self) -> str:
        parts = [self.family]
        for spec in self.all_params():
            v = self.values[spec.key]
            if v is None:
                continue
            quiet = spec in COMMON or (spec.type is str and spec.choices is not None)
            if quiet and v == spec.default:
                continue
            parts.append(spec.format(v))
        return "-".join(parts)

    def check(self) -> None:
        super().check()
        if self.values["r"] < 1:
            raise PredictorError(f"{self.family}: projected dimension r must be >= 1, got {self.values['r']}")
        self.check_family()  # floats that a name cannot hold were refused by Predictor.__init__

    def check_family(self) -> None:
        """The family's own rules on its parameter values (override); raise PredictorError."""

    def shared_fit(self) -> tuple:
        """The projections of ``(r, proj, seed)`` (:func:`projection_key`), shared by the whole sweep."""
        return projection_key(self.values["r"], self.values["proj"] == "shared", self.seed)

    def _fit(self, data, gold) -> None:
        self.projections = cached_projections(data, gold, r=self.values["r"],
                                              shared=self.values["proj"] == "shared", seed=self.seed)
        self.projection_seconds = self.projections.seconds
        self._fit_projected(data, gold)

    def _fit_projected(self, data, gold) -> None:
        pass

    def project(self, view: LayerView, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected eval queries and keys of one layer, ``[S, H, T, r]`` each."""
        return self.projections.apply(view, layer)
