"""Attention sinks learned from the fit samples: the common ``s`` parameter of every predictor.

Some keys receive attention from almost every query of a head: the first token ([CLS], <s>), the
last one ([SEP]), punctuation at a fixed place. Instead of hard-coding them (the common ``g``), the
``s`` sink columns of each layer and head are read from the gold graph of the *fit* samples.

A candidate sink is a position counted from the start (``0, 1, ...``) or from the end (``-1`` = the
last valid token, ``-2``, ...). In a sample of ``n`` tokens, candidate ``p >= 0`` is token ``p`` and
candidate ``p < 0`` is token ``n + p`` (absent when out of range). Its *share* is

    share(p) = #{(sample, query i) : (i, token(p)) is a gold pair} / #{(sample, query i) : i valid}

the share of fit queries whose gold support holds that key. The sinks of a head are chosen greedily,
``s`` times, as the candidate whose tokens *not already chosen* receive the most gold pairs: a pair
counts once, even when a start and an end candidate name the same token of a sample. Each step thus
adds the most fit gold pairs any candidate can add (greedy maximum coverage, within ``1 - 1/e`` of
the best ``s`` candidates). When all fit samples have one length, a start and an end candidate name
the same token everywhere or nowhere, and the ``s`` columns cover the most fit gold pairs any ``s``
candidates can; with ragged samples an exact choice is a maximum-coverage problem, not attempted.
Ties go to start positions before end positions, then to the position nearest to the sample's edge.
A candidate that adds nothing is not taken, so a head may get fewer than ``s``.

The predicted graph adds the chosen key *columns* (every query sees them), never rows; in causal data
the metrics keep only ``j <= i`` as for every graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from predictors.errors import PredictorError
from predictors.graphs import GlobalGraph


@dataclass
class Sinks:
    """Sink positions of every layer and head.

    Attributes
    ----------
    positions : int64 ``[L, H, s]``, signed positions (``>= 0`` from the start, ``< 0`` from the end)
    valid : bool ``[L, H, s]``, false for the slots of heads that found fewer than ``s`` sinks
    share : float64 ``[L, H, s]``, share of fit queries each sink newly covered when chosen (0 if not valid)
    """

    positions: torch.Tensor
    valid: torch.Tensor
    share: torch.Tensor

    def graph(self, layer: int, num_heads: int) -> GlobalGraph:
        """The sink columns of one layer as a :class:`GlobalGraph` (columns only, per head)."""
        if not 0 <= layer < self.positions.shape[0] or num_heads != self.positions.shape[1]:
            raise PredictorError(f"sinks were fitted for {self.positions.shape[0]} layers x "
                                 f"{self.positions.shape[1]} heads, asked for layer {layer} with {num_heads} heads")
        pos, ok = self.positions[layer], self.valid[layer]
        start = torch.where(ok & (pos >= 0), pos, -1)
        end = torch.where(ok & (pos < 0), -pos - 1, -1)
        return GlobalGraph((), num_heads, rows=False, per_head=start, per_head_from_end=end)


def key_hits(layer_gold) -> tuple[torch.Tensor, torch.Tensor]:
    """How many queries attend to each key, per sample and head.

    Returns ``start`` and ``end``, int64 ``[S, H, T]``: ``start[s, h, p]`` counts the gold pairs of
    key ``p`` of sample ``s``; ``end[s, h, e]`` those of key ``n_s - 1 - e`` (``0`` beyond the sample).
    """
    s_count, nh, t = layer_gold.counts.shape
    row = torch.repeat_interleave(torch.arange(s_count * nh * t), layer_gold.counts.flatten())
    sample_head = row // t
    cols = layer_gold.cols.long()
    start = torch.bincount(sample_head * t + cols, minlength=s_count * nh * t).view(s_count, nh, t)
    n = layer_gold.lengths[sample_head // nh]
    end = torch.bincount(sample_head * t + (n - 1 - cols), minlength=s_count * nh * t).view(s_count, nh, t)
    return start, end


def fit_layer_sinks(layer_gold, count: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Greedy sinks of one layer (see the module docstring): positions, valid, share ``[H, count]``."""
    s_count, nh, t = layer_gold.counts.shape
    lengths = layer_gold.lengths
    start, end = key_hits(layer_gold)
    # Candidates 0..T-1 (from the start), then -1..-T (from the end): ties prefer that order.
    hits = torch.cat([start, end], dim=-1).double()  # [S, H, 2T]
    cand = torch.cat([torch.arange(t), -torch.arange(t) - 1])
    # token[s, c]: the token candidate c names in sample s, or -1.
    tok = torch.where(cand[None, :] >= 0, cand[None, :], lengths[:, None] + cand[None, :])
    tok = torch.where((tok >= 0) & (tok < lengths[:, None]), tok, -1)  # [S, 2T]
    covered = torch.zeros(s_count, nh, t + 1, dtype=torch.bool)  # column t: "no token"
    queries = float(lengths.sum())
    positions = torch.zeros(nh, count, dtype=torch.int64)
    valid = torch.zeros(nh, count, dtype=torch.bool)
    share = torch.zeros(nh, count, dtype=torch.float64)
    tok_idx = torch.where(tok >= 0, tok, t)[:, None, :].expand(-1, nh, -1)  # [S, H, 2T]
    for m in range(count):
        gain = (hits * ~covered.gather(2, tok_idx)).sum(0)  # [H, 2T]
        best = gain.argmax(-1)  # first maximum: the tie order above
        g = gain.gather(1, best[:, None]).squeeze(1)
        ok = g > 0
        positions[:, m] = cand[best]
        valid[:, m] = ok
        share[:, m] = torch.where(ok, g / queries, 0.0)
        chosen = tok[:, best]  # [S, H]: the token of the chosen candidate per sample and head
        chosen = torch.where((chosen >= 0) & ok[None, :], chosen, t)
        covered.scatter_(2, chosen[:, :, None], True)
        covered[..., t] = False
    return positions, valid, share


def fit_sinks(gold, count: int) -> Sinks:
    """The ``count`` sinks of every layer and head of ``gold`` (the fit samples' gold graph)."""
    if count < 1:
        raise PredictorError(f"sink count must be >= 1, got {count}")
    parts = [fit_layer_sinks(lg, count) for lg in gold.layers]
    return Sinks(positions=torch.stack([p[0] for p in parts]), valid=torch.stack([p[1] for p in parts]),
                 share=torch.stack([p[2] for p in parts]))
