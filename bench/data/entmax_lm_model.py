"""The ``entmax-lm`` model: a small causal byte-level transformer whose attention *is* 1.5-entmax.

The model reads raw UTF-8 bytes (vocabulary 256) and every head of every layer attends with

    P = entmax15(mask(scale * Q K^T)),   scale = 1 / sqrt(Dh),

where ``mask`` keeps the keys ``j <= i`` (and ``j < length``) and gives every other key a large *finite*
negative (:func:`predictors.masking.mask_scores`), exactly as the gold graph (:mod:`bench.evaluation.gold`)
does. Its recipe (:class:`EntmaxLMConfig`) is part of the checkpoint's cache key
(:mod:`bench.data.entmax_lm`); training is :mod:`bench.data.entmax_lm_train`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from entmax import entmax15
from torch import nn

from bench.errors import DataError
from predictors.masking import mask_scores

VOCAB = 256
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

    def train_logits(self, x: torch.Tensor, offsets: torch.Tensor | None) -> torch.Tensor:
        """Next-byte logits ``[B, T, 256]`` of training windows ``x`` ``[B, T]`` whose positions start at
        ``offsets[b]`` (``None``: at 0), so short windows train every positional embedding."""
        return self._run(x, None, False, None, offsets)

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
