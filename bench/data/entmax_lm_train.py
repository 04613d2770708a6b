"""Training of the ``entmax-lm`` model (:func:`train_entmax_lm`) and its held-out bits per byte.

Training is seeded and single-machine deterministic: the same arguments give bit-identical weights
on the same machine (:func:`train_entmax_lm`). The trained weights are cached by
:func:`bench.data.entmax_lm.load_entmax_lm`.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from bench.data.corpora import Corpus
from bench.data.entmax_lm_model import EVAL_BATCH, VOCAB, EntmaxLM, EntmaxLMConfig
from bench.data.entmax_lm_windows import byte_tensor, eval_windows, split_corpus
from bench.errors import DataError

DEFAULT_STEPS = 1000
DEFAULT_BATCH = 8
TRAIN_THREADS = 2


@torch.no_grad()
def heldout_bpc(model: EntmaxLM, heldout: bytes) -> float:
    """Mean cross-entropy in bits per byte of ``model`` on ``heldout``.

    The bytes are cut into consecutive windows of ``context + 1`` bytes (each window's last byte starts
    the next); every byte after the first of its window is predicted once, from its own window only.
    """
    windows = eval_windows(byte_tensor(heldout), model.config.context)
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    for i in range(0, windows.shape[0], EVAL_BATCH):
        w = windows[i : i + EVAL_BATCH]
        logits = model(w[:, :-1])
        total += F.cross_entropy(logits.reshape(-1, VOCAB), w[:, 1:].reshape(-1), reduction="sum").item()
        count += w[:, 1:].numel()
    model.train(was_training)
    return total / count / math.log(2)


def _lr_factor(step: int, steps: int, config: EntmaxLMConfig) -> float:
    """Learning rate at ``step`` as a fraction of ``config.lr``: linear warm-up, then cosine decay to
    ``final_lr_fraction``."""
    warm = max(1, round(config.warmup * steps))
    if step < warm:
        return (step + 1) / warm
    progress = (step - warm) / max(1, steps - warm)
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return config.final_lr_fraction + (1 - config.final_lr_fraction) * cosine


def train_entmax_lm(corpus: Corpus, config: EntmaxLMConfig | None = None, seed: int = 0,
                    steps: int | None = None, batch: int | None = None, progress: bool = False,
                    threads: int = TRAIN_THREADS):
    """Train an :class:`EntmaxLM` on the training part of ``corpus`` (see :func:`split_corpus`).

    Each step draws windows at uniformly random positions of the training part (a seeded
    ``torch.Generator``): ``batch`` windows of ``context + 1`` bytes, or as many bytes in shorter windows
    during the warm-up phases of ``config.schedule``. It minimises the mean next-byte cross-entropy with
    AdamW (betas 0.9, 0.95), linear warm-up then cosine decay of the learning rate, and gradient
    clipping. Initialisation and sampling depend on ``seed`` only, and training runs on ``threads``
    threads (the caller's setting is restored afterwards), so the same arguments give bit-identical
    weights on the same machine. The caller's global RNG is left untouched.

    Returns
    -------
    model : the trained :class:`EntmaxLM`, in eval mode
    report : dict of numbers: ``heldout_bpc`` (bits per byte on the held-out part),
        ``train_bpc_start`` / ``train_bpc_end`` (mean training loss in bits over the first / last
        ``min(10, steps)`` steps), ``train_seconds``, ``steps``, ``batch``, ``params``,
        ``train_bytes``, ``heldout_bytes``
    """
    config = config or EntmaxLMConfig()
    steps = DEFAULT_STEPS if steps is None else steps
    batch = DEFAULT_BATCH if batch is None else batch
    train_bytes, heldout = _checked_split(corpus, config, steps, batch, threads)
    train = byte_tensor(train_bytes)
    caller_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            gen = torch.Generator().manual_seed(seed)
            model = EntmaxLM(config)
            model.reset_parameters(gen)
            start = time.perf_counter()
            losses = _train_loop(model, train, gen, steps, batch, f"train entmax-lm on {corpus.name}", progress)
            seconds = time.perf_counter() - start
            model.eval()
            bpc = heldout_bpc(model, heldout)
    finally:
        torch.set_num_threads(caller_threads)
    window = min(10, steps)
    report = {"heldout_bpc": bpc, "train_bpc_start": sum(losses[:window]) / window,
              "train_bpc_end": sum(losses[-window:]) / window, "train_seconds": seconds, "steps": steps,
              "batch": batch, "params": sum(p.numel() for p in model.parameters()),
              "train_bytes": len(train_bytes), "heldout_bytes": len(heldout)}
    return model, report


def _checked_split(corpus: Corpus, config: EntmaxLMConfig, steps: int, batch: int,
                   threads: int) -> tuple[bytes, bytes]:
    """``(train, heldout)`` bytes of ``corpus``, after checking every training argument (before training,
    not after: a held-out part too short to evaluate fails here)."""
    if steps < 1 or batch < 1:
        raise DataError(f"entmax-lm training needs steps >= 1 and batch >= 1, got {steps}, {batch}")
    train_bytes, heldout = split_corpus(corpus)
    span = config.context + 1
    if len(train_bytes) <= span:
        raise DataError(f"corpus {corpus.name!r} has {len(train_bytes)} training bytes; need more than {span}")
    eval_windows(byte_tensor(heldout), config.context)
    if threads < 1:
        raise DataError(f"entmax-lm training needs threads >= 1, got {threads}")
    return train_bytes, heldout


def _train_loop(model: EntmaxLM, train: torch.Tensor, gen: torch.Generator, steps: int, batch: int,
                desc: str, progress: bool) -> list[float]:
    """``steps`` AdamW steps on windows of the training bytes ``train`` drawn with ``gen``: the training
    loss of each step in bits per byte."""
    from bench.progress import Step

    config = model.config
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=config.lr, betas=(0.9, 0.95))
    losses = []
    with Step(desc, total=steps, unit="steps", enabled=progress) as bar:
        for step in range(steps):
            for group in opt.param_groups:
                group["lr"] = config.lr * _lr_factor(step, steps, config)
            t, shift = config.phase_at(step, steps)
            loss = _step(model, opt, train, gen, t, shift, batch)
            losses.append(loss)
            bar.update(note=f"train bpc {loss:.3f}, length {t}")
    return losses


def _step(model: EntmaxLM, opt, train: torch.Tensor, gen: torch.Generator, t: int, shift: bool,
          batch: int) -> float:
    """One optimiser step on ``batch * context // t`` windows of ``t + 1`` bytes at random positions
    (placed at a random offset in the context when ``shift``); its loss in bits per byte."""
    config = model.config
    rows = batch * config.context // t
    starts = torch.randint(train.numel() - t, (rows,), generator=gen)
    windows = train[starts[:, None] + torch.arange(t + 1)]
    offsets = None
    if shift and t < config.context:
        offsets = torch.randint(config.context - t + 1, (rows,), generator=gen)
    logits = model.train_logits(windows[:, :-1], offsets)
    loss = F.cross_entropy(logits.reshape(-1, VOCAB), windows[:, 1:].reshape(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    opt.step()
    return loss.item() / math.log(2)
