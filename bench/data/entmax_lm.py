"""The ``entmax-lm`` attention source: a small causal byte-level transformer whose attention *is* 1.5-entmax.

This is the causal-decoder setting of the Sparsefinder paper. The model reads raw UTF-8 bytes (vocabulary
256) and every head of every layer attends with

    P = entmax15(mask(scale * Q K^T)),   scale = 1 / sqrt(Dh),

where ``mask`` keeps the keys ``j <= i`` (and ``j < length``) and gives every other key a large *finite*
negative (:func:`predictors.masking.mask_scores`), exactly as the gold graph (:mod:`bench.evaluation.gold`) does. The
captured Q and K therefore reproduce the model's own attention, not an approximation of it.

The model is trained by this project (:func:`train_entmax_lm`), once per (corpus, config, seed, steps,
batch), and cached (:func:`load_entmax_lm`, kind ``"entmax-lm"``). The corpus bytes are split by
position before anything else: the first ~95% train the model, the last ~5% (starting at a paragraph
boundary) are held out. Held-out bits per byte ("bpc") and the attention samples of
:func:`entmax_lm_data` both come from the held-out part, so they are measured on text the model never saw.

Public API: :class:`EntmaxLMConfig`, :class:`EntmaxLM` (with its ``attention`` hook),
:func:`entmax_attention`, :func:`train_entmax_lm`, :func:`load_entmax_lm`, :func:`entmax_lm_data`, and the
helpers :func:`split_corpus`, :func:`sample_windows`, :func:`heldout_bpc`, :func:`model_descriptor`.

On a shared machine, training with two threads is much faster with ``OMP_WAIT_POLICY=PASSIVE`` in the
environment (an OpenMP setting read at start-up, so it is the caller's to set; the weights do not change).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from entmax import entmax15
from torch import nn

from bench.data import cache
from bench.data.corpora import Corpus, load_corpus
from bench.errors import DataError
from predictors.data import AttentionData
from predictors.masking import mask_scores

KIND = "entmax-lm"
# Bump when training, the split or the checkpoint layout changes: old cache entries are then unused.
FORMAT_VERSION = 1
VOCAB = 256
HELDOUT_FRACTION = 0.05
DEFAULT_STEPS = 1000
DEFAULT_BATCH = 8
TRAIN_THREADS = 2
MIN_SAMPLE_LEN = 32
# Partial-sort width of entmax15 in the model: trained heads keep a few keys, so a top-16 selection is
# about twice as fast as sorting every row, with the same result.
ATTENTION_TOPK = 16
# Inference chunk (windows at a time) for held-out bpc and for capturing attention data.
EVAL_BATCH = 16

AttentionHook = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class EntmaxLMConfig:
    """Architecture and optimiser recipe of the model; every field is part of the cache key.

    Attributes
    ----------
    layers, heads, width : transformer depth, heads per layer, model width (head dim = width / heads)
    context : maximal sequence length (learned positional embeddings)
    mlp_ratio : hidden width of the GELU MLP, in multiples of ``width``
    lr : peak AdamW learning rate, reached after ``warmup`` of the steps, then cosine decay to
        ``lr * final_lr_fraction``
    weight_decay : AdamW decoupled weight decay, applied to matrices only (not biases, LayerNorms)
    warmup : fraction of the steps spent in linear warm-up
    final_lr_fraction : learning rate at the last step, as a fraction of ``lr``
    grad_clip : maximal global gradient norm
    schedule : sequence-length warm-up, ``((fraction, length, shift), ...)``: the first ``fraction``
        of the steps train on windows of ``length`` bytes, then the next phase, and the remaining steps
        on the full ``context``. A phase uses ``batch * context // length`` windows, so every step sees
        the same number of bytes. With ``shift``, each window sits at a random position offset in the
        context (positions ``o .. o + length - 1``), so every positional embedding is trained; without,
        at positions ``0 .. length - 1``.

        Why: attention costs grow with the length squared, so short windows buy more steps in the same
        time; and entmax gives keys outside the support no gradient, so a head that went sparse early
        on the wrong keys (same byte, spaces) cannot find the previous-byte pattern among 256 keys:
        training at 256 bytes from the start stalled near 3.7 bits per byte on the fortunes corpus.
        Unshifted short windows learn fastest, but leave positions beyond ``length`` untrained, where
        the next longer phase then stalls the same way; shifted phases in between fix that. Measured
        with the default recipe on fortunes, held-out bits per byte: 2.92 with every short phase
        shifted, 2.82 with the first one unshifted.
    """

    layers: int = 4
    heads: int = 4
    width: int = 128
    context: int = 256
    mlp_ratio: int = 4
    lr: float = 4e-3
    weight_decay: float = 0.01
    warmup: float = 0.05
    final_lr_fraction: float = 0.1
    grad_clip: float = 1.0
    schedule: tuple = ((0.4, 64, False), (0.2, 64, True), (0.25, 128, True))

    def __post_init__(self):
        if self.layers < 1 or self.heads < 1 or self.width < 1 or self.context < 2 or self.mlp_ratio < 1:
            raise DataError(f"entmax-lm config has a non-positive size: {self}")
        if self.width % self.heads:
            raise DataError(f"entmax-lm width {self.width} is not divisible by heads {self.heads}")
        try:
            # Normalised to tuples: a config read back from JSON (lists) gets the same cache key.
            phases = tuple((float(f), int(n), bool(shift)) for f, n, shift in self.schedule)
        except (TypeError, ValueError):
            raise DataError(f"entmax-lm schedule {self.schedule!r} must be ((fraction, length, shift), ...)"
                            ) from None
        object.__setattr__(self, "schedule", phases)
        if sum(f for f, _, _ in phases) > 1 + 1e-9 or any(f < 0 or not 2 <= n <= self.context
                                                          for f, n, _ in phases):
            raise DataError(f"entmax-lm schedule {self.schedule} needs fractions >= 0 summing to <= 1 and "
                            f"lengths in 2..{self.context}")

    def phase_at(self, step: int, steps: int) -> tuple[int, bool]:
        """``(length, shift)`` of the training windows at ``step`` of ``steps`` (see ``schedule``)."""
        edge = 0.0
        for fraction, length, shift in self.schedule:
            edge += fraction
            if step < edge * steps:
                return length, shift
        return self.context, False

    @property
    def head_dim(self) -> int:
        return self.width // self.heads


def entmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: torch.Tensor,
                     scale: float | None = None, return_probs: bool = False,
                     topk: int | None = ATTENTION_TOPK):
    """Causal 1.5-entmax attention, the model's default.

    ``out = P @ v`` with ``P = entmax15(mask_scores(scale * q @ k^T, allowed))`` over the last axis,
    ``allowed[b, i, j] = j <= i and j < lengths[b]``; disallowed keys get a large finite negative and
    zero probability.

    Parameters
    ----------
    q, k, v : float ``[B, H, T, Dh]`` (unscaled projections)
    lengths : int64 ``[B]``, valid tokens per row (padding at the end), each >= 1
    scale : defaults to ``1 / sqrt(Dh)``
    return_probs : also return ``P``
    topk : partial-sort width of ``entmax15`` (rows whose support does not fit are redone with twice
        the width, so the result is exact whatever ``topk``); a speed setting only, ``None``: full sort

    Returns
    -------
    out : ``[B, H, T, Dh]``, and ``P`` ``[B, H, T, T]`` when ``return_probs``
    """
    t, dh = q.shape[-2], q.shape[-1]
    scale = 1.0 / math.sqrt(dh) if scale is None else scale
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale
    allowed = causal_allowed(t, lengths, q.device)[:, None]  # [B, 1, T, T]
    topk = topk if topk is not None and topk < t else None
    probs = entmax15(mask_scores(scores, allowed), dim=-1, k=topk)
    out = torch.matmul(probs, v)
    return (out, probs) if return_probs else out


def causal_allowed(t: int, lengths: torch.Tensor, device=None) -> torch.Tensor:
    """Boolean ``[B, T, T]``: key ``j`` is visible from query ``i`` of row ``b`` iff ``j <= i`` and
    ``j < lengths[b]`` (padding queries see the valid keys, so no row is empty)."""
    pos = torch.arange(t, device=device)
    return (pos[None, :] <= pos[:, None])[None] & (pos[None, None, :] < lengths.to(device)[:, None, None])


def sinusoids(positions: int, width: int) -> torch.Tensor:
    """``[positions, width]``: ``sin(p / 10000^(2i / width))`` in column ``2i``, the cosine in ``2i + 1``."""
    p = torch.arange(positions, dtype=torch.float64)[:, None]
    freq = 10000.0 ** (-torch.arange(0, width, 2, dtype=torch.float64) / width)
    out = torch.zeros(positions, width, dtype=torch.float64)
    out[:, 0::2] = torch.sin(p * freq)
    out[:, 1::2] = torch.cos(p * freq[: width // 2])
    return out.float()


class _Block(nn.Module):
    """Pre-LayerNorm transformer block: ``h + attn(ln1(h))``, then ``h + mlp(ln2(h))``."""

    def __init__(self, config: EntmaxLMConfig):
        super().__init__()
        w = config.width
        self.ln1 = nn.LayerNorm(w)
        self.qkv = nn.Linear(w, 3 * w)
        self.proj = nn.Linear(w, w)
        self.ln2 = nn.LayerNorm(w)
        self.fc = nn.Linear(w, config.mlp_ratio * w)
        self.out = nn.Linear(config.mlp_ratio * w, w)


class EntmaxLM(nn.Module):
    """Causal byte-level transformer with 1.5-entmax attention (see the module docstring).

    Pre-LayerNorm blocks, learned positional embeddings, GELU MLP, untied output layer over the 256 byte
    values. ``scale = 1 / sqrt(head_dim)`` multiplies ``Q K^T`` in every head.
    """

    def __init__(self, config: EntmaxLMConfig | None = None):
        super().__init__()
        self.config = config = config or EntmaxLMConfig()
        self.scale = 1.0 / math.sqrt(config.head_dim)
        self.tok = nn.Embedding(VOCAB, config.width)
        self.pos = nn.Embedding(config.context, config.width)
        self.blocks = nn.ModuleList(_Block(config) for _ in range(config.layers))
        self.ln_f = nn.LayerNorm(config.width)
        self.head = nn.Linear(config.width, VOCAB)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """GPT-2 style initialisation: N(0, 0.02), residual outputs scaled by 1/sqrt(2 layers), zero biases.

        The (learned) positional embeddings start as sinusoids of about the same scale, so positions that
        the first, unshifted training phase never sees still start with relative-position structure
        rather than noise. (In our runs on fortunes this made no measurable difference: 2.95 vs 2.92
        held-out bits per byte with N(0, 0.02), with the every-phase-shifted schedule.)
        """
        resid_std = 0.02 / math.sqrt(2 * self.config.layers)
        for name, p in self.named_parameters():
            with torch.no_grad():
                if name.endswith(".bias"):
                    p.zero_()
                elif ".ln" in name or name.startswith("ln_"):
                    p.fill_(1.0)
                elif name == "pos.weight":
                    p.copy_(sinusoids(*p.shape) * 0.02 * math.sqrt(2))
                else:
                    std = resid_std if name.endswith(("proj.weight", "out.weight")) else 0.02
                    p.copy_(torch.randn(p.shape, generator=generator) * std)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None, capture: bool = False,
                attention: AttentionHook | None = None):
        """Next-byte logits of byte sequences ``x``.

        Parameters
        ----------
        x : int64 ``[B, T]``, byte values in ``[0, 256)``, ``T <= config.context``
        lengths : int64 ``[B]``, valid bytes per row (padding at the end); ``None``: all ``T``. Under the
            causal mask padding never influences valid positions; ``lengths`` only narrows the keys
            visible to padding queries and is passed on to ``attention``.
        capture : also return the per-layer projections and attention probabilities
        attention : optional ``attention(layer, q, k, v, lengths) -> out``, called in every layer instead
            of :func:`entmax_attention`, with ``q, k, v`` ``[B, H, T, Dh]`` unscaled (multiply
            ``q @ k^T`` by ``model.scale``), ``lengths`` int64 ``[B]`` (never ``None``), and returning
            ``out`` ``[B, H, T, Dh]``, the attention-weighted values before the output projection.
            ``lambda l, q, k, v, n: entmax_attention(q, k, v, n, model.scale)`` reproduces the model.

        Returns
        -------
        logits : float ``[B, T, 256]``, row ``i`` predicting byte ``i + 1``
        captured : only when ``capture``, a dict of ``q``, ``k``, ``v`` ``[B, L, H, T, Dh]`` (float32,
            post-projection, pre-scaling) and, when ``attention`` is ``None``, ``probs``
            ``[B, L, H, T, T]``, the attention probabilities the model used
        """
        return self._run(x, lengths, capture, attention, offsets=None)

    def _run(self, x, lengths, capture, attention, offsets):
        """:meth:`forward`, with the positions of row ``b`` starting at ``offsets[b]`` (training only:
        short windows placed anywhere in the context train every positional embedding)."""
        cfg = self.config
        if x.ndim != 2 or x.dtype != torch.long:
            raise DataError(f"entmax-lm input must be int64 [B, T], got {x.dtype} {tuple(x.shape)}")
        b, t = x.shape
        if not 1 <= t <= cfg.context:
            raise DataError(f"entmax-lm input has {t} tokens; the model's context is 1..{cfg.context}")
        if lengths is None:
            lengths = torch.full((b,), t, dtype=torch.long, device=x.device)
        elif lengths.shape != (b,) or int(lengths.min()) < 1 or int(lengths.max()) > t:
            raise DataError(f"lengths must be [B={b}] with values in 1..{t}, got {lengths.tolist()}")
        positions = torch.arange(t, device=x.device)
        if offsets is not None:
            positions = offsets[:, None] + positions
        h = self.tok(x) + self.pos(positions)
        captured: dict[str, list[torch.Tensor]] = {"q": [], "k": [], "v": [], "probs": []}
        for layer, block in enumerate(self.blocks):
            q, k, v = block.qkv(block.ln1(h)).view(b, t, 3, cfg.heads, cfg.head_dim).permute(2, 0, 3, 1, 4)
            if attention is None:
                out, probs = entmax_attention(q, k, v, lengths, self.scale, return_probs=True)
                if capture:
                    captured["probs"].append(probs.detach().float())
            else:
                out = attention(layer, q, k, v, lengths)
                if out.shape != q.shape:
                    raise DataError(f"attention hook returned {tuple(out.shape)} in layer {layer}; "
                                    f"expected [B, H, T, Dh] = {tuple(q.shape)}")
            if capture:
                for name, tensor in (("q", q), ("k", k), ("v", v)):
                    captured[name].append(tensor.detach().float())
            h = h + block.proj(out.transpose(1, 2).reshape(b, t, cfg.width))
            h = h + block.out(F.gelu(block.fc(block.ln2(h))))
        logits = self.head(self.ln_f(h))
        if not capture:
            return logits
        result = {name: torch.stack(parts, dim=1) for name, parts in captured.items() if parts}
        return logits, result


# -- data ------------------------------------------------------------------------------------------


def split_corpus(corpus: Corpus, heldout_fraction: float = HELDOUT_FRACTION) -> tuple[bytes, bytes]:
    """Split the corpus' UTF-8 bytes by position into ``(train, heldout)``.

    The held-out part is the last ``heldout_fraction`` of the bytes, moved forward to the next paragraph
    start (after a blank line) so it begins with a whole document; without a blank line after the cut,
    the cut stays where it is.
    """
    data = corpus.text.encode("utf-8")
    cut = int(len(data) * (1.0 - heldout_fraction))
    blank = data.find(b"\n\n", cut)
    if blank >= 0:
        cut = blank
        while cut < len(data) and data[cut : cut + 1] in (b"\n", b"\r", b" ", b"\t"):
            cut += 1
    return data[:cut], data[cut:]


def _as_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).long()


def _eval_windows(heldout: torch.Tensor, context: int) -> torch.Tensor:
    """Consecutive non-overlapping windows of ``context + 1`` bytes ``[N, context + 1]`` (the fixed
    held-out evaluation set; window ``n`` starts at byte ``n * context``)."""
    n = (heldout.numel() - 1) // context
    if n < 1:
        raise DataError(f"held-out part has {heldout.numel()} bytes; need more than the context {context}")
    return torch.stack([heldout[i * context : i * context + context + 1] for i in range(n)])


@torch.no_grad()
def heldout_bpc(model: EntmaxLM, heldout: bytes) -> float:
    """Mean cross-entropy in bits per byte of ``model`` on ``heldout``.

    The bytes are cut into consecutive windows of ``context + 1`` bytes (each window's last byte starts
    the next); every byte after the first of its window is predicted once, from its own window only.
    """
    windows = _eval_windows(_as_tensor(heldout), model.config.context)
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


# -- training --------------------------------------------------------------------------------------


def _lr_factor(step: int, steps: int, config: EntmaxLMConfig) -> float:
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
    from tqdm.auto import tqdm

    config = config or EntmaxLMConfig()
    steps = DEFAULT_STEPS if steps is None else steps
    batch = DEFAULT_BATCH if batch is None else batch
    if steps < 1 or batch < 1:
        raise DataError(f"entmax-lm training needs steps >= 1 and batch >= 1, got {steps}, {batch}")
    train_bytes, heldout = split_corpus(corpus)
    train = _as_tensor(train_bytes)
    span = config.context + 1
    if train.numel() <= span:
        raise DataError(f"corpus {corpus.name!r} has {train.numel()} training bytes; need more than {span}")
    _eval_windows(_as_tensor(heldout), config.context)  # fail before training, not after

    if threads < 1:
        raise DataError(f"entmax-lm training needs threads >= 1, got {threads}")
    caller_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            gen = torch.Generator().manual_seed(seed)
            model = EntmaxLM(config)
            model.reset_parameters(gen)
            model.train()
            decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
            no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
            opt = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                     {"params": no_decay, "weight_decay": 0.0}],
                                    lr=config.lr, betas=(0.9, 0.95))
            losses = []
            start = time.perf_counter()
            with tqdm(range(steps), desc=f"train entmax-lm on {corpus.name}", unit="step",
                      disable=not progress) as bar:
                for step in bar:
                    for group in opt.param_groups:
                        group["lr"] = config.lr * _lr_factor(step, steps, config)
                    t, shift = config.phase_at(step, steps)
                    rows = batch * config.context // t
                    starts = torch.randint(train.numel() - t, (rows,), generator=gen)
                    windows = train[starts[:, None] + torch.arange(t + 1)]
                    offsets = None
                    if shift and t < config.context:
                        offsets = torch.randint(config.context - t + 1, (rows,), generator=gen)
                    logits = model._run(windows[:, :-1], None, False, None, offsets)
                    loss = F.cross_entropy(logits.reshape(-1, VOCAB), windows[:, 1:].reshape(-1))
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                    opt.step()
                    losses.append(loss.item() / math.log(2))
                    if step % 10 == 0 or step == steps - 1:
                        bar.set_postfix(bpc=f"{losses[-1]:.3f}", length=t)
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


def windows_batch(windows: list[bytes]) -> tuple[torch.Tensor, torch.Tensor]:
    """Byte windows as one batch: ``x`` int64 ``[B, T]`` padded at the end with spaces (causal attention
    never lets padding reach a valid position) and their ``lengths`` ``[B]``."""
    lengths = torch.tensor([len(w) for w in windows], dtype=torch.long)
    x = torch.full((len(windows), int(lengths.max())), ord(" "), dtype=torch.long)
    for i, w in enumerate(windows):
        x[i, : len(w)] = _as_tensor(w)
    return x, lengths


def sample_windows(heldout: bytes, samples: int, length: int, seed: int) -> list[bytes]:
    """``samples`` non-overlapping windows of the held-out bytes, chosen by ``seed``.

    The held-out text is walked paragraph by paragraph (paragraphs end at a blank line): a window starts
    at a paragraph start and ends at the last paragraph end within ``length`` bytes, or, where that would
    leave fewer than ``MIN_SAMPLE_LEN`` bytes, is cut at ``length`` bytes. So windows hold whole
    documents where they can and their lengths vary between ``MIN_SAMPLE_LEN`` and ``length``. The next
    window starts at the first paragraph start after the previous window. A seeded permutation picks
    ``samples`` of these windows.
    """
    starts, ends, pos = [], [], 0
    while True:
        end = heldout.find(b"\n\n", pos)
        end = len(heldout) if end < 0 else end
        if end > pos:
            starts.append(pos)
            ends.append(end)
        nxt = end
        while nxt < len(heldout) and heldout[nxt : nxt + 1] in (b"\n", b"\r", b" ", b"\t"):
            nxt += 1
        if nxt >= len(heldout):
            break
        pos = nxt
    windows, i = [], 0
    while i < len(starts):
        s = starts[i]
        j = i
        while j + 1 < len(starts) and ends[j + 1] - s <= length:
            j += 1
        if MIN_SAMPLE_LEN <= ends[j] - s <= length:
            stop = ends[j]
        else:
            stop = min(s + length, len(heldout))
        if stop - s >= MIN_SAMPLE_LEN:
            windows.append(heldout[s:stop])
        i = j + 1
        while i < len(starts) and starts[i] < stop:
            i += 1
    if len(windows) < samples:
        raise DataError(f"held-out text has {len(windows)} windows of {MIN_SAMPLE_LEN}..{length} bytes; "
                        f"asked for {samples} samples (use a larger corpus or fewer samples)")
    order = torch.randperm(len(windows), generator=torch.Generator().manual_seed(seed))[:samples]
    return [windows[int(i)] for i in order]


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
