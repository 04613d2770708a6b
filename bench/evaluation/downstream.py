"""Downstream effect of a predictor: the model itself, run with every attention layer restricted to its graph.

A predictor is fitted as everywhere else, on the fit samples' captured Q and K
(:attr:`bench.evaluation.prepared.Prepared.fit`). Then the model runs on *held-out* inputs (never the fit
samples) with an attention hook (:class:`RestrictedAttention`) in every layer that

1. wraps the layer's live ``q``, ``k``, ``v`` ``[B, H, T, Dh]`` (those of the restricted model itself, so
   an error in one layer reaches the next ones, as in the Sparsefinder paper's masked-LM evaluation)
   in a :class:`~predictors.data.LayerView` and asks ``predictor.predict(view, layer)`` for its
   graph;
2. computes 1.5-entmax attention over the predicted pairs only (:mod:`bench.execution.sparse_exec`: masked scores
   get a large finite negative, never ``-inf``; a query with no predicted key gets a zero output).

What is measured, against the same model with dense entmax attention (every valid pair):

* ``entmax-lm`` (causal byte LM, :mod:`bench.data.entmax_lm`): held-out bits per byte,
  ``bpc = sum_i -log2 p(x_{i+1} | x_{<=i}) / #predictions`` over held-out text windows; the model's own
  attention *is* dense entmax, so the reference is the model itself. Lower is better.
* ``minilm`` (bidirectional encoder, :mod:`bench.data.minilm`): the cosine similarity of each held-out
  text's sentence embedding (mean pooling, L2 normalised) to the embedding of the dense-entmax model,
  averaged over texts. Higher is better; the dense reference is 1. MiniLM was trained with softmax, so
  the cosine to the original softmax model is kept too (``cosine_to_softmax``), with the dense-entmax
  model's own (``reference_to_softmax``).

Every run also records the *effective sparsity* of the restricted runs: per layer, head and sample,
``1 - |P & valid| / |valid|`` with ``P`` the graph predicted on the live Q/K, averaged like the
metrics (:mod:`bench.evaluation.metrics`), and the sparsity of the restricted attention itself (its support).

Held-out inputs: the attention data's seeded draw is extended to ``samples`` draws (its first draws
are exactly the data's samples, checked), and every draw that is not a fit sample is evaluated.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from bench.errors import DataError
from bench.evaluation.metric_table import higher_is_better
from bench.execution.exec_stats import ExecStats
from bench.execution.sparse_exec import graph_attention
from predictors.data import LayerView

METRICS = {"entmax-lm": "bpc", "minilm": "cosine"}
EVAL_BATCH = 8


@dataclass
class RestrictedAttention:
    """Attention hook for :meth:`EntmaxLM.forward` and :meth:`MiniLM.forward`: entmax over a graph.

    Called as ``hook(layer, q, k, v, lengths_or_mask)`` with ``q``, ``k``, ``v`` ``[B, H, T, Dh]`` and
    either int64 ``lengths`` ``[B]`` (entmax-lm) or a bool validity mask ``[B, T]`` (MiniLM, padding at
    the end). ``predictor`` ``None`` means every valid pair (dense entmax attention). ``method`` is
    that of :func:`bench.execution.sparse_exec.graph_attention` (``masked``: the reference computation, for any
    graph). Counts of every call are kept per layer (:meth:`summary`).
    """

    predictor: object | None
    causal: bool
    scale: float
    alpha: float = 1.5
    method: str = "masked"
    stats: dict = field(default_factory=dict)  # layer -> list of ExecStats, one per call
    predict_seconds: float = 0.0

    def __call__(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, valid: torch.Tensor):
        lengths = valid.sum(1).to(torch.int64) if valid.dtype == torch.bool else valid.to(torch.int64)
        graph = None
        if self.predictor is not None:
            view = LayerView(q=q.float(), k=k.float(), v=v.float(), lengths=lengths.cpu(), causal=self.causal,
                             scale=self.scale, alpha=self.alpha)
            start = time.perf_counter()
            graph = self.predictor.predict(view, layer)
            self.predict_seconds += time.perf_counter() - start
        st = ExecStats.zeros(q.shape[0], q.shape[1])
        out = graph_attention(q, k, v, lengths, self.causal, self.scale, graph, self.alpha, self.method, stats=st)
        self.stats.setdefault(layer, []).append(st)
        return out.to(v.dtype)

    def summary(self) -> dict:
        """Effective sparsity of every call so far: means over layers, heads and samples, and per layer.

        Returns ``sparsity`` (predicted pairs), ``support_sparsity`` (non-zero restricted probabilities),
        ``empty_rows`` (share of valid queries with no predicted key), and ``per_layer_sparsity``,
        ``per_layer_support_sparsity`` (lists over layers, each the mean over heads and samples).
        """
        per_layer = {"sparsity": [], "support_sparsity": [], "empty_rows": []}
        for layer in sorted(self.stats):
            cat = lambda name, sts=self.stats[layer]: torch.cat([getattr(s, name) for s in sts])
            valid = cat("valid_pairs")
            per_layer["sparsity"].append((1 - cat("pred_pairs") / valid).mean().item())
            per_layer["support_sparsity"].append((1 - cat("support_pairs") / valid).mean().item())
            per_layer["empty_rows"].append((cat("empty_rows") / cat("valid_rows")).mean().item())
        mean = lambda xs: float(sum(xs) / len(xs)) if xs else math.nan
        return {"sparsity": mean(per_layer["sparsity"]), "support_sparsity": mean(per_layer["support_sparsity"]),
                "empty_rows": mean(per_layer["empty_rows"]), "per_layer_sparsity": per_layer["sparsity"],
                "per_layer_support_sparsity": per_layer["support_sparsity"]}


# ---------------------------------------------------------------- held-out inputs


@dataclass
class DownstreamSet:
    """Held-out inputs of one dataset, the model, and the dense-entmax reference on them.

    Attributes
    ----------
    dataset : ``"entmax-lm"`` or ``"minilm"``; metric : ``"bpc"`` or ``"cosine"``
    model : the model (:class:`EntmaxLM` or :class:`MiniLM`)
    batches : list of model inputs: ``(x, lengths)`` byte windows or ``(ids, mask)`` token batches
    causal, scale, alpha : the attention of the model
    reference : per-batch dense-entmax results (bpc: summed cross-entropy in nats and the number of
        predictions; cosine: the embeddings ``[B, 384]``)
    softmax : MiniLM only, the embeddings of the original softmax model
    samples : indices (in the extended seeded draw) of the evaluated inputs; tokens : their total length
    descriptor : what the set was built from (the attention data's descriptor and the draw)
    """

    dataset: str
    metric: str
    model: object
    batches: list
    causal: bool
    scale: float
    alpha: float
    reference: list
    samples: list
    tokens: int
    descriptor: dict
    softmax: list | None = None
    reference_seconds: float = math.nan


def _corpus(descriptor: dict, corpus=None):
    from bench.data.corpora import Corpus, load_corpus

    if isinstance(corpus, Corpus):
        c = corpus
    else:
        name = corpus or descriptor.get("corpus")
        if isinstance(name, str) and name.startswith("file:") and "/" not in name and corpus is None:
            raise DataError(f"the data was drawn from corpus {name}; pass the corpus (file:PATH) explicitly")
        c = load_corpus(name)
    if descriptor.get("corpus_sha256") and c.sha256 != descriptor["corpus_sha256"]:
        raise DataError(f"corpus {c.name} does not match the one the attention data was drawn from "
                        "(SHA-256 differs)")
    return c


def _eval_indices(prep, samples: int | None) -> tuple[list[int], int]:
    total = prep.data.num_samples if samples is None else max(int(samples), prep.data.num_samples)
    fit = set(prep.fit.descriptor.get("samples", range(prep.fit.num_samples)))
    return [i for i in range(total) if i not in fit], total


def entmax_lm_set(prep, samples: int | None = None, corpus=None, batch: int = EVAL_BATCH) -> DownstreamSet:
    """Held-out byte windows of ``prep`` (an ``entmax-lm`` :class:`Prepared`) for :func:`evaluate`.

    The windows of :func:`bench.data.entmax_lm.sample_windows` are drawn again with the data's seed for
    ``samples`` windows (the first ones are the data's own, checked by length); every window that is
    not a fit sample is kept. The model is loaded from the cache by the data's model key.
    """
    from bench.data import entmax_lm as elm

    desc = prep.data.descriptor
    if desc.get("source") != "entmax-lm":
        raise DataError(f"entmax_lm_set needs entmax-lm data, got source {desc.get('source')!r}")
    c = _corpus(desc, corpus)
    config = elm.EntmaxLMConfig(**desc["config"])
    model, report = elm.load_entmax_lm(c, config, seed=desc["model_seed"], steps=desc["steps"], batch=desc["batch"])
    if report["descriptor_key"] != desc["model_key"]:
        raise DataError("the cached entmax-lm model is not the one the attention data came from "
                        f"(key {report['descriptor_key']} != {desc['model_key']})")
    idx, total = _eval_indices(prep, samples)
    _, heldout = elm.split_corpus(c)
    windows = elm.sample_windows(heldout, total, desc["length"], desc["seed"])
    if [len(w) for w in windows[: prep.data.num_samples]] != prep.data.lengths.tolist():
        raise DataError("the extended draw of windows does not start with the attention data's own windows")
    batches, reference = [], []
    start = time.perf_counter()
    for b0 in range(0, len(idx), batch):
        x, lengths = elm.windows_batch([windows[i] for i in idx[b0 : b0 + batch]])
        batches.append((x, lengths))
        with torch.no_grad():
            reference.append(_nats(model(x, lengths=lengths), x, lengths))
    return DownstreamSet(dataset="entmax-lm", metric="bpc", model=model, batches=batches, causal=True,
                         scale=model.scale, alpha=1.5, reference=reference, samples=idx,
                         tokens=sum(int(lb.sum()) for _, lb in batches),
                         descriptor={**desc, "downstream_samples": total, "eval_windows": len(idx)},
                         reference_seconds=time.perf_counter() - start)


def _nats(logits: torch.Tensor, x: torch.Tensor, lengths: torch.Tensor) -> tuple[float, int]:
    """Summed next-byte cross-entropy (nats) over the valid predictions of a batch, and their number."""
    t = x.shape[1]
    valid = torch.arange(t - 1)[None, :] < (lengths - 1)[:, None]
    ce = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="none")
    return float(ce[valid.flatten()].sum()), int(valid.sum())


def minilm_set(prep, samples: int | None = None, corpus=None, batch: int = EVAL_BATCH) -> DownstreamSet:
    """Held-out texts of ``prep`` (a ``minilm`` :class:`Prepared`) for :func:`evaluate`.

    The texts and target lengths of :func:`bench.data.minilm.minilm_data` are drawn again with the
    data's seed for ``samples`` texts (the first ones are the data's own, checked by token count), and
    every text that is not a fit sample is tokenised as there.
    """
    from bench.data.minilm import MAX_POSITIONS, draw_texts, load_minilm, pad_batch, target_lengths, tokenize

    desc = prep.data.descriptor
    if desc.get("source") != "minilm":
        raise DataError(f"minilm_set needs minilm data, got source {desc.get('source')!r}")
    c = _corpus(desc, corpus)
    length, seed = int(desc["length"]), int(desc["seed"])
    idx, total = _eval_indices(prep, samples)
    texts = draw_texts(c.documents(), total, min_words=length, seed=seed)
    targets = target_lengths(total, length, seed)
    own = [len(tokenize([texts[i]], targets[i])[0][0]) for i in range(prep.data.num_samples)]
    if own != prep.data.lengths.tolist():
        raise DataError("the extended draw of texts does not start with the attention data's own texts")
    model = load_minilm()
    scale = 1.0 / math.sqrt(model.head_dim)
    batches, reference, softmax = [], [], []
    start = time.perf_counter()
    for b0 in range(0, len(idx), batch):
        ids, mask = pad_batch([tokenize([texts[i]], min(MAX_POSITIONS, targets[i]))[0][0]
                               for i in idx[b0 : b0 + batch]])
        batches.append((ids, mask))
        dense = RestrictedAttention(None, causal=False, scale=scale)
        reference.append(model.embed(ids, mask, attention=dense))
        softmax.append(model.embed(ids, mask))
    return DownstreamSet(dataset="minilm", metric="cosine", model=model, batches=batches, causal=False, scale=scale,
                         alpha=1.5, reference=reference, softmax=softmax, samples=idx,
                         tokens=sum(int(m.sum()) for _, m in batches),
                         descriptor={**desc, "downstream_samples": total, "eval_texts": len(idx)},
                         reference_seconds=time.perf_counter() - start)


def downstream_set(prep, samples: int | None = None, corpus=None) -> DownstreamSet:
    """:func:`entmax_lm_set` or :func:`minilm_set`, by the source of ``prep``."""
    source = prep.data.descriptor.get("source")
    if source == "entmax-lm":
        return entmax_lm_set(prep, samples, corpus)
    if source == "minilm":
        return minilm_set(prep, samples, corpus)
    raise DataError(f"no downstream task for source {source!r}; known: {', '.join(METRICS)}")


# ---------------------------------------------------------------- evaluation


def run_restricted(dset: DownstreamSet, predictor=None, method: str = "masked") -> tuple[list, RestrictedAttention]:
    """The model on every batch of ``dset`` with :class:`RestrictedAttention` of ``predictor`` in every
    layer (``None``: dense entmax). Returns the per-batch results (as ``dset.reference``) and the hook."""
    hook = RestrictedAttention(predictor, dset.causal, dset.scale, dset.alpha, method)
    results = []
    with torch.no_grad():
        for batch in dset.batches:
            if dset.metric == "bpc":
                x, lengths = batch
                results.append(_nats(dset.model(x, lengths=lengths, attention=hook), x, lengths))
            else:
                ids, mask = batch
                results.append(dset.model.embed(ids, mask, attention=hook))
    return results, hook


def score_results(dset: DownstreamSet, results: list) -> dict:
    """The downstream metric of ``results`` (from :func:`run_restricted`) against the dense reference.

    Returns ``metric``, ``value``, ``reference`` (the dense-entmax value), ``delta = value - reference``,
    ``higher_is_better``, ``per_sample`` (bpc: per batch of windows; cosine: per text), and for MiniLM
    ``cosine_to_softmax`` and ``reference_to_softmax``.
    """
    if dset.metric == "bpc":
        nats = sum(r[0] for r in results)
        count = sum(r[1] for r in results)
        ref = sum(r[0] for r in dset.reference) / sum(r[1] for r in dset.reference) / math.log(2)
        value = nats / count / math.log(2)
        per = [r[0] / r[1] / math.log(2) for r in results]
        extra = {}
    else:
        emb, ref_emb = torch.cat(results), torch.cat(dset.reference)
        soft = torch.cat(dset.softmax)
        cos = (emb * ref_emb).sum(-1)
        per = cos.tolist()
        value, ref = float(cos.mean()), 1.0
        extra = {"cosine_to_softmax": float((emb * soft).sum(-1).mean()),
                 "reference_to_softmax": float((ref_emb * soft).sum(-1).mean())}
    return {"metric": dset.metric, "value": value, "reference": ref, "delta": value - ref,
            "higher_is_better": higher_is_better(dset.metric), "per_sample": per, **extra}


def evaluate(dset: DownstreamSet, predictor=None, method: str = "masked") -> dict:
    """Run and score one fitted predictor (``None``: dense entmax) on ``dset``: :func:`score_results`
    plus the effective sparsity of :meth:`RestrictedAttention.summary`, ``seconds`` (the whole restricted
    run) and ``predict_seconds`` (its predictions)."""
    start = time.perf_counter()
    results, hook = run_restricted(dset, predictor, method)
    seconds = time.perf_counter() - start
    return {**score_results(dset, results), **hook.summary(), "seconds": seconds,
            "predict_seconds": hook.predict_seconds}
