"""The ``entmax-lm`` attention source: a small causal byte-level transformer whose attention *is* 1.5-entmax.

This is the causal-decoder setting of the Sparsefinder paper. The model reads raw UTF-8 bytes (vocabulary
256) and every head of every layer attends with

    P = entmax15(mask(scale * Q K^T)),   scale = 1 / sqrt(Dh),

where ``mask`` keeps the keys ``j <= i`` (and ``j < length``) and gives every other key a large *finite*
negative (:func:`predictors.masking.mask_scores`), exactly as the gold graph (:mod:`bench.evaluation.gold`)
does. The captured Q and K therefore reproduce the model's own attention, not an approximation of it.

The model is trained by this project (:func:`train_entmax_lm`), once per (corpus, config, seed, steps,
batch), and cached (:func:`load_entmax_lm`, kind ``"entmax-lm"``). The corpus bytes are split by
position before anything else: the first ~95% train the model, the last ~5% (starting at a paragraph
boundary) are held out. Held-out bits per byte ("bpc") and the attention samples of
:func:`entmax_lm_data` both come from the held-out part, so they are measured on text the model never saw.

By job: the model (:mod:`bench.data.entmax_lm_model`: :class:`EntmaxLMConfig`, :class:`EntmaxLM` with
its ``attention`` hook, :func:`entmax_attention`), its training (:mod:`bench.data.entmax_lm_train`:
:func:`train_entmax_lm`, :func:`heldout_bpc`), the byte windows (:mod:`bench.data.entmax_lm_windows`:
:func:`split_corpus`, :func:`sample_windows`, :func:`windows_batch`), and here the cached checkpoint
(:func:`model_descriptor`, :func:`load_entmax_lm`) and the attention data (:func:`entmax_lm_data`).
The names of all four are importable from this module, the source's public API.

On a shared machine, training with two threads is much faster with ``OMP_WAIT_POLICY=PASSIVE`` in the
environment (an OpenMP setting read at start-up, so it is the caller's to set; the weights do not change).
"""

from __future__ import annotations

from dataclasses import asdict

import torch

from bench.data import cache
from bench.data.corpora import Corpus, load_corpus
from bench.data.entmax_lm_model import (
    ATTENTION_TOPK,
    EVAL_BATCH,
    VOCAB,
    AttentionHook,
    EntmaxLM,
    EntmaxLMConfig,
    causal_allowed,
    entmax_attention,
    sinusoids,
)
from bench.data.entmax_lm_train import DEFAULT_BATCH, DEFAULT_STEPS, TRAIN_THREADS, heldout_bpc, train_entmax_lm
from bench.data.entmax_lm_windows import (
    HELDOUT_FRACTION,
    MIN_SAMPLE_LEN,
    byte_tensor,
    eval_windows,
    sample_windows,
    split_corpus,
    windows_batch,
)
from bench.errors import DataError
from predictors.data import AttentionData

__all__ = [  # the source's public API, from every module of it
    "ATTENTION_TOPK", "DEFAULT_BATCH", "DEFAULT_STEPS", "EVAL_BATCH", "FORMAT_VERSION", "HELDOUT_FRACTION", "KIND",
    "MIN_SAMPLE_LEN", "TRAIN_THREADS", "VOCAB", "AttentionHook", "EntmaxLM", "EntmaxLMConfig", "byte_tensor",
    "causal_allowed", "entmax_attention", "entmax_lm_data", "eval_windows", "heldout_bpc", "load_entmax_lm",
    "model_descriptor", "sample_windows", "sinusoids", "split_corpus", "train_entmax_lm", "windows_batch",
]

KIND = "entmax-lm"
# Bump when training, the split or the checkpoint layout changes: old cache entries are then unused.
FORMAT_VERSION = 1


def _resolve_corpus(corpus: Corpus | str | None) -> Corpus:
    return corpus if isinstance(corpus, Corpus) else load_corpus(corpus)


def model_descriptor(corpus: Corpus, config: EntmaxLMConfig, seed: int, steps: int, batch: int,
                     threads: int = TRAIN_THREADS) -> dict:
    """What produced a checkpoint: the cache key of :func:`load_entmax_lm`."""
    return {"source": KIND, "format": FORMAT_VERSION, **corpus.descriptor, "config": asdict(config),
            "seed": seed, "steps": steps, "batch": batch, "threads": threads,
            "heldout_fraction": HELDOUT_FRACTION, "versions": cache.versions()}


def load_entmax_lm(corpus: Corpus | str | None = None, config: EntmaxLMConfig | None = None, seed: int = 0,
                   steps: int | None = None, batch: int | None = None, show_progress: bool = False,
                   use_cache: bool = True, threads: int = TRAIN_THREADS):
    """The trained model of :func:`train_entmax_lm`, from the cache or trained and cached.

    ``corpus`` is a :class:`Corpus`, a corpus name, or ``None`` for the default corpus. The cache entry
    (kind ``"entmax-lm"``) is keyed by :func:`model_descriptor` and holds the weights; the training report
    is kept in its ``extra``. A corrupt entry is retrained with a warning. ``threads`` is part of the key:
    float sums, and so the trained weights, depend on how many threads computed them.

    Returns
    -------
    model : :class:`EntmaxLM` in eval mode
    report : the training report of :func:`train_entmax_lm`, plus ``descriptor_key``, the entry's key
    """
    corpus = _resolve_corpus(corpus)
    config = config or EntmaxLMConfig()
    steps = DEFAULT_STEPS if steps is None else steps
    batch = DEFAULT_BATCH if batch is None else batch
    descriptor = model_descriptor(corpus, config, seed, steps, batch, threads)

    def build():
        model, report = train_entmax_lm(corpus, config, seed=seed, steps=steps, batch=batch,
                                        progress=show_progress, threads=threads)
        return {name: t.detach().clone() for name, t in model.state_dict().items()}, report

    state, report = cache.load_or_build(KIND, descriptor, build, use_cache=use_cache)
    model = EntmaxLM(config)
    model.load_state_dict(state)
    model.eval()
    return model, {**report, "descriptor_key": cache.descriptor_key(descriptor)}



def entmax_lm_data(corpus: Corpus | str | None = None, samples: int = 16, length: int = 256, seed: int = 0,
                   steps: int | None = None, show_progress: bool = False, use_cache: bool = True,
                   config: EntmaxLMConfig | None = None, batch: int | None = None,
                   model_seed: int = 0, threads: int = TRAIN_THREADS) -> AttentionData:
    """Q, K, V of the ``entmax-lm`` model on ``samples`` held-out text windows.

    Loads (or trains and caches) the model with :func:`load_entmax_lm` (``config``, ``model_seed``,
    ``steps``, ``batch``, ``threads``), draws ``samples`` windows of at most ``length`` bytes from the held-out part
    of the corpus with :func:`sample_windows` (``seed``), and runs the model on them with
    ``capture=True``.

    Returns
    -------
    AttentionData
        ``q``, ``k``, ``v`` float32 ``[samples, L, H, T, Dh]`` with ``T`` the longest window, ragged
        ``lengths``, ``causal=True``, ``scale = 1 / sqrt(Dh)``, ``alpha = 1.5``, name ``"entmax-lm"``;
        its descriptor records the corpus, the sampling arguments, the model's cache key and
        configuration, and the model's held-out bits per byte.
    """
    corpus = _resolve_corpus(corpus)
    config = config or EntmaxLMConfig()
    if not MIN_SAMPLE_LEN <= length <= config.context:
        raise DataError(f"length must be in {MIN_SAMPLE_LEN}..{config.context} (the model's context), "
                        f"got {length}")
    if samples < 1:
        raise DataError(f"samples must be >= 1, got {samples}")
    _, heldout = split_corpus(corpus)
    windows = sample_windows(heldout, samples, length, seed)  # before training: fail fast
    model, report = load_entmax_lm(corpus, config, seed=model_seed, steps=steps, batch=batch,
                                   show_progress=show_progress, use_cache=use_cache, threads=threads)
    x, lengths = windows_batch(windows)
    parts = {"q": [], "k": [], "v": []}
    with torch.no_grad():
        # A few samples at a time: the captured probabilities are [B, L, H, T, T].
        for i in range(0, samples, EVAL_BATCH):
            _, captured = model(x[i : i + EVAL_BATCH], lengths=lengths[i : i + EVAL_BATCH], capture=True)
            for name in parts:
                parts[name].append(captured[name])
    q, k, v = (torch.cat(parts[name]) for name in ("q", "k", "v"))
    return AttentionData(
        q=q, k=k, v=v, lengths=lengths, causal=True, scale=model.scale,
        alpha=1.5, name=KIND,
        descriptor={"source": KIND, **corpus.descriptor, "samples": samples, "length": length, "seed": seed,
                    "model_seed": model_seed, "steps": report["steps"], "batch": report["batch"],
                    "threads": threads,
                    "config": asdict(config), "model_key": report["descriptor_key"],
                    "heldout_bpc": report["heldout_bpc"], "heldout_fraction": HELDOUT_FRACTION},
    )
