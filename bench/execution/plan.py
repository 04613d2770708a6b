"""The plan of a predicted graph: how sparse execution computes it, or why it cannot.

:func:`sparse_plan` splits a graph into the parts sparse execution knows (code graphs, key lists, a
window, global rows and columns; unions of them included) and maps it to one execution strategy of
:data:`STRATEGIES`. A graph it cannot execute sparsely gets an explicit :class:`Unsupported` plan whose
reason names the graph type: sparse execution never falls back to the masked reference on its own (a
caller that wants the reference for such graphs asks for it, as :func:`bench.execution.sparse_exec.graph_attention`
with ``method="auto"`` does).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from bench.errors import BenchError
from predictors.graphs import CodeGraph, GlobalGraph, KeyListGraph, PredictedGraph, UnionGraph, WindowGraph

STRATEGIES = {
    "rows": "no code part: row blocks of listed keys, the band and global columns",
    "code-blocks": "one code per query (top-1 clusters, one hash round): each group of code blocks is a row "
                   "block, the other parts appended to its rows",
    "code-candidates": "several codes per query or several code graphs (alpha 1.5 only): each block row gives "
                       "its largest entries, the exact threshold of a row is computed from those candidates",
}
SPARSE_TYPES = "CodeGraph, KeyListGraph, WindowGraph, GlobalGraph and their unions"


class UnsupportedGraph(BenchError):
    """A graph that :func:`bench.execution.sparse_exec.sparse_entmax_attention` cannot execute sparsely
    (raised with the reason of its :class:`Unsupported` plan)."""


@dataclass
class SparsePlan:
    """A supported graph, split into its parts, and the strategy that executes it (:data:`STRATEGIES`)."""

    strategy: str = "rows"
    codes: list = field(default_factory=list)
    key_lists: list = field(default_factory=list)
    window: int = 0
    globals: list = field(default_factory=list)
    num_heads: int | None = None
    supported: ClassVar[bool] = True

    def columns(self, n: int, device) -> torch.Tensor:
        """Global key columns of a sample with ``n`` tokens, per head: int64 ``[H, g]``, ``-1`` padded."""
        h = self.num_heads
        per_head: list[set] = [set() for _ in range(h)]
        for g in self.globals:
            common = {p + n if p < 0 else p for p in g.positions}
            common = {p for p in common if 0 <= p < n}
            for head in range(h):
                per_head[head] |= common
                if g.per_head is not None:
                    per_head[head] |= {int(c) for c in g.per_head[head].tolist() if 0 <= c < n}
                if g.per_head_from_end is not None:
                    per_head[head] |= {n - 1 - int(e) for e in g.per_head_from_end[head].tolist() if 0 <= e < n}
        g = max((len(x) for x in per_head), default=0)
        out = torch.full((h, g), -1, dtype=torch.long)
        for head, cols in enumerate(per_head):
            out[head, : len(cols)] = torch.tensor(sorted(cols), dtype=torch.long)
        return out.to(device)

    def rows(self, n: int) -> list[int]:
        """Global query rows (every key predicted) of a sample with ``n`` tokens."""
        rows = set()
        for g in self.globals:
            if g.rows:
                rows |= {p + n if p < 0 else p for p in g.positions}
        return sorted(p for p in rows if 0 <= p < n)


@dataclass(frozen=True)
class Unsupported:
    """A graph that sparse execution cannot compute: ``graph_type`` (the class that is in the way) and
    the ``reason``, one line naming it."""

    graph_type: str
    reason: str
    supported: ClassVar[bool] = False


def sparse_plan(graph: PredictedGraph, alpha: float = 1.5) -> SparsePlan | Unsupported:
    """The :class:`SparsePlan` of ``graph`` for entmax ``alpha``, or :class:`Unsupported` with its reason.

    Unsupported: any part outside :data:`SPARSE_TYPES`, and code graphs that need the
    ``code-candidates`` strategy with alpha other than 1.5 (its threshold is 1.5-entmax's).
    """
    plan = SparsePlan()
    bad = _collect(graph, plan)
    if bad is not None:
        inside = " (a part of a UnionGraph)" if isinstance(graph, UnionGraph) else ""
        return Unsupported(bad, f"sparse execution supports {SPARSE_TYPES}, not {bad}{inside}")
    if not plan.codes:
        plan.strategy = "rows"
    elif len(plan.codes) == 1 and plan.codes[0].q_codes.shape[-1] == 1:
        plan.strategy = "code-blocks"
    elif alpha == 1.5:
        plan.strategy = "code-candidates"
    else:
        per_query = [g.q_codes.shape[-1] for g in plan.codes]
        what = (f"a CodeGraph with {per_query[0]} codes per query" if len(per_query) == 1
                else f"{len(per_query)} CodeGraphs")
        return Unsupported("CodeGraph", f"sparse execution of {what} needs alpha = 1.5 (its exact threshold over "
                                        f"several code blocks per row is 1.5-entmax's), got alpha = {alpha}")
    return plan


def _collect(graph: PredictedGraph, plan: SparsePlan) -> str | None:
    """Add the parts of ``graph`` (unions flattened) to ``plan``; the type name of the first part that
    sparse execution does not know, or ``None``. The plan's heads are those of its first part."""
    for part in graph.parts if isinstance(graph, UnionGraph) else [graph]:
        if isinstance(part, UnionGraph):
            bad = _collect(part, plan)
            if bad is not None:
                return bad
            continue
        if isinstance(part, CodeGraph):
            plan.codes.append(part)
            heads = part.q_codes.shape[1]
        elif isinstance(part, KeyListGraph):
            plan.key_lists.append(part)
            heads = part.keys.shape[1]
        elif isinstance(part, WindowGraph):
            plan.window = max(plan.window, part.width)
            heads = part.num_heads
        elif isinstance(part, GlobalGraph):
            plan.globals.append(part)
            heads = part.num_heads
        else:
            return type(part).__name__
        plan.num_heads = heads if plan.num_heads is None else plan.num_heads
    return None


def supports(graph: PredictedGraph, alpha: float = 1.5) -> bool:
    """Whether :func:`bench.execution.sparse_exec.sparse_entmax_attention` can execute ``graph`` at ``alpha``."""
    return sparse_plan(graph, alpha).supported
