"""block_mask semantics of the compact predicted graphs, on hand-built cases with known answers."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from predictors.graphs import (
    BlockGraph,
    CodeGraph,
    DistanceGraph,
    FunctionGraph,
    GlobalGraph,
    KeyListGraph,
    UnionGraph,
    WindowGraph,
)


def pairs(mask: torch.Tensor, i0: int = 0) -> set:
    """The predicted (i, j) pairs of one head's block mask ``[B, n]`` whose first row is query ``i0``."""
    return {(i0 + int(i), int(j)) for i, j in mask.nonzero().tolist()}


def full_mask(graph, s: int, n: int, block: int) -> torch.Tensor:
    """The whole ``[H, n, n]`` mask of sample ``s``, assembled from query blocks of size ``block``."""
    return torch.cat([graph.block_mask(s, i0, min(n, i0 + block), n) for i0 in range(0, n, block)], dim=1)


# -- window -------------------------------------------------------------------------------------------

def test_window_width_3_on_7_tokens():
    m = WindowGraph(3, num_heads=2).block_mask(0, 0, 7, 7)
    assert m.shape == (2, 7, 7) and m.dtype == torch.bool
    expected = {(i, j) for i in range(7) for j in range(7) if abs(i - j) <= 1}
    assert pairs(m[0]) == expected == pairs(m[1])
    assert int(m[0].sum()) == 3 * 7 - 2


def test_window_block_rows_are_the_query_positions():
    m = WindowGraph(5, num_heads=1).block_mask(0, 3, 5, 9)  # queries 3 and 4 of 9 tokens
    assert pairs(m[0], i0=3) == {(3, 1), (3, 2), (3, 3), (3, 4), (3, 5), (4, 2), (4, 3), (4, 4), (4, 5), (4, 6)}


def test_window_zero_predicts_nothing_and_even_width_rounds_down_to_odd():
    assert not WindowGraph(0, 3).block_mask(0, 0, 5, 5).any()
    # |i - j| <= w // 2: width 4 is width 3, width 1 the diagonal.
    assert torch.equal(WindowGraph(4, 1).block_mask(0, 0, 6, 6), WindowGraph(5, 1).block_mask(0, 0, 6, 6))
    assert torch.equal(WindowGraph(1, 1).block_mask(0, 0, 6, 6)[0], torch.eye(6, dtype=torch.bool))


def test_window_covering_everything():
    n = 11
    assert WindowGraph(2 * n - 1, 1).block_mask(0, 0, n, n).all()
    assert not WindowGraph(2 * n - 3, 1).block_mask(0, 0, n, n).all()


# -- globals ------------------------------------------------------------------------------------------

def test_globals_first_and_last_rows_and_columns():
    n = 6
    m = GlobalGraph((0, -1), num_heads=1).block_mask(0, 0, n, n)[0]
    expected = {(i, j) for i in range(n) for j in range(n) if i in (0, 5) or j in (0, 5)}
    assert pairs(m) == expected
    assert int(m.sum()) == 2 * (2 * n - 2)


def test_globals_negative_positions_follow_each_samples_length():
    g = GlobalGraph((-1,), num_heads=1, rows=False)
    assert pairs(g.block_mask(0, 0, 3, 4)[0]) == {(0, 3), (1, 3), (2, 3)}
    assert pairs(g.block_mask(1, 0, 2, 2)[0]) == {(0, 1), (1, 1)}


def test_globals_out_of_range_positions_are_dropped():
    g = GlobalGraph((1, 10, -10), num_heads=1)
    assert pairs(g.block_mask(0, 0, 4, 4)[0]) == {(i, 1) for i in range(4)} | {(1, j) for j in range(4)}


def test_global_rows_only_inside_the_block():
    g = GlobalGraph((0, 2), num_heads=1)
    m = g.block_mask(0, 1, 3, 5)[0]  # queries 1 and 2
    assert pairs(m, i0=1) == {(1, 0), (1, 2)} | {(2, j) for j in range(5)}


def test_globals_per_head_columns():
    per_head = torch.tensor([[3, -1], [1, 9]])  # head 0: key 3; head 1: key 1 (9 is beyond n)
    g = GlobalGraph((), num_heads=2, per_head=per_head)
    m = g.block_mask(0, 0, 4, 5)
    assert pairs(m[0]) == {(i, 3) for i in range(4)}
    assert pairs(m[1]) == {(i, 1) for i in range(4)}


# -- codes --------------------------------------------------------------------------------------------

def test_codes_matched_rounds():
    # One sample, one head, 3 tokens, 2 rounds.
    q = torch.tensor([[[[0, 1], [1, 1], [2, -1]]]])
    k = torch.tensor([[[[0, 0], [1, 0], [-1, 2]]]])
    m = CodeGraph(q, k, num_codes=3, matched_rounds=True).block_mask(0, 0, 3, 3)[0]
    # q0=(0,1): k0 round 0. q1=(1,1): k1 round 0. q2=(2,-1): no key has code 2 in round 0;
    # k2's code 2 is in round 1, and codes of different rounds never match.
    assert pairs(m) == {(0, 0), (1, 1)}


def test_codes_sets_match_across_rounds_and_minus_one_never_matches():
    q = torch.tensor([[[[0, 1], [1, 1], [2, -1], [-1, -1]]]])
    k = torch.tensor([[[[0, 0], [1, 0], [-1, 2], [-1, -1]]]])
    m = CodeGraph(q, k, num_codes=3, matched_rounds=False).block_mask(0, 0, 4, 4)[0]
    # Sets: q {0,1}, {1}, {2}, {}; k {0}, {0,1}, {2}, {}.
    assert pairs(m) == {(0, 0), (0, 1), (1, 1), (2, 2)}


def test_codes_ignore_keys_beyond_n_and_select_the_sample():
    q = torch.tensor([[[[0], [0], [0]]], [[[1], [0], [0]]]])  # [S=2, H=1, T=3, R=1]
    k = torch.tensor([[[[0], [1], [0]]], [[[1], [1], [0]]]])
    g = CodeGraph(q, k, num_codes=2)
    assert pairs(g.block_mask(0, 0, 2, 2)[0]) == {(0, 0), (1, 0)}  # key 2 is beyond n = 2
    assert pairs(g.block_mask(1, 0, 3, 3)[0]) == {(0, 0), (0, 1), (1, 2), (2, 2)}


# -- key lists, blocks, rules, distances --------------------------------------------------------------

def test_key_list_with_padding_and_out_of_range_keys():
    keys = torch.tensor([[[[2, -1], [0, 4], [1, 1]]]])  # [1, 1, 3, 2]; key 4 is beyond n = 4
    m = KeyListGraph(keys).block_mask(0, 0, 3, 4)[0]
    assert pairs(m) == {(0, 2), (1, 0), (2, 1)}
    assert pairs(KeyListGraph(keys).block_mask(0, 1, 3, 5)[0], i0=1) == {(1, 0), (1, 4), (2, 1)}


def test_block_graph_tiles():
    blocks = torch.tensor([[[[True, False, False], [False, False, True], [False, False, False]]]])
    m = BlockGraph(blocks, block_size=2).block_mask(0, 0, 5, 5)[0]
    # Tile (0, 0): i, j in {0, 1}; tile (1, 2): i in {2, 3}, j = 4 (the last tile is cut at n = 5).
    assert pairs(m) == {(0, 0), (0, 1), (1, 0), (1, 1), (2, 4), (3, 4)}


def test_function_graph_rule():
    g = FunctionGraph(lambda i, j: (i + j) % 3 == 0, num_heads=2)
    m = g.block_mask(0, 1, 3, 4)
    assert m.shape == (2, 2, 4)
    assert pairs(m[1], i0=1) == {(1, 2), (2, 1)}


def test_distance_graph_l2_is_strict_and_cosine():
    q = torch.tensor([[[[0.0, 0.0], [1.0, 0.0]]]])
    k = torch.tensor([[[[0.0, 0.0], [1.0, 1.0], [3.0, 0.0]]]])
    m = DistanceGraph(q, k, threshold=1.0).block_mask(0, 0, 2, 3)[0]
    # Squared distances: q0 -> 0, 2, 9; q1 -> 1, 1, 4. "< 1" keeps only (0, 0).
    assert pairs(m) == {(0, 0)}
    m = DistanceGraph(q, k, threshold=1.5).block_mask(0, 0, 2, 3)[0]
    assert pairs(m) == {(0, 0), (1, 0), (1, 1)}
    qc = torch.tensor([[[[1.0, 0.0]]]])
    kc = torch.tensor([[[[2.0, 0.0], [1.0, 1.0], [0.0, 1.0]]]])
    # 1 - cos: 0, 1 - 1/sqrt(2) = 0.29, 1.
    assert pairs(DistanceGraph(qc, kc, threshold=0.5, metric="cosine").block_mask(0, 0, 1, 3)[0]) == {(0, 0), (0, 1)}


# -- unions and blocking ------------------------------------------------------------------------------

def test_union_flattens_and_ors():
    a, b, c = WindowGraph(1, 1), GlobalGraph((0,), 1), KeyListGraph(torch.tensor([[[[3], [-1], [-1], [-1]]]]))
    u = a | b | c
    assert isinstance(u, UnionGraph) and u.parts == [a, b, c]
    m = u.block_mask(0, 0, 4, 4)[0]
    assert pairs(m) == {(i, i) for i in range(4)} | {(0, j) for j in range(4)} | {(i, 0) for i in range(4)}
    # Calling again gives the same mask: no part is changed in place by the union.
    assert torch.equal(u.block_mask(0, 0, 4, 4)[0], m)
    assert isinstance((a | b) | (c | a), UnionGraph) and len(((a | b) | (c | a)).parts) == 4


CODES = torch.randint(-1, 5, (2, 3, 45, 2), generator=torch.Generator().manual_seed(7))
KEYS = torch.randint(-1, 45, (2, 3, 45, 4), generator=torch.Generator().manual_seed(8))
PROJ = torch.randn(2, 3, 45, 4, generator=torch.Generator().manual_seed(9))
GRAPHS = {
    "window": WindowGraph(7, 3),
    "globals": GlobalGraph((0, 3, -1), 3),
    "codes-matched": CodeGraph(CODES, CODES.flip(2), 5, matched_rounds=True),
    "codes-sets": CodeGraph(CODES, CODES.flip(2), 5, matched_rounds=False),
    "keys": KeyListGraph(KEYS),
    "blocks": BlockGraph(torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(1)) < 0.3, 4),
    "rule": FunctionGraph(lambda i, j: (i * j) % 5 == 1, 3),
    "distance": DistanceGraph(PROJ, PROJ.flip(2), threshold=2.0),
}


@pytest.mark.parametrize("name", sorted(GRAPHS))
@pytest.mark.parametrize("n", [45, 30, 2])
def test_blocks_assemble_the_same_mask_for_any_block_size(name, n):
    g = GRAPHS[name]
    whole = g.block_mask(1, 0, n, n)
    assert whole.shape == (3, n, n) and whole.dtype == torch.bool
    for block in (1, 7, 16):
        assert torch.equal(full_mask(g, 1, n, block), whole)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2 ** 31 - 1), t=st.integers(2, 13), rounds=st.integers(1, 3), codes=st.integers(1, 5),
       matched=st.booleans())
def test_codes_against_pair_by_pair_reference(seed, t, rounds, codes, matched):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randint(-1, codes, (1, 2, t, rounds), generator=gen)
    k = torch.randint(-1, codes, (1, 2, t, rounds), generator=gen)
    m = CodeGraph(q, k, codes, matched_rounds=matched).block_mask(0, 0, t, t)
    for h in range(2):
        for i in range(t):
            for j in range(t):
                qi, kj = q[0, h, i].tolist(), k[0, h, j].tolist()
                if matched:
                    want = any(a == b >= 0 for a, b in zip(qi, kj))
                else:
                    want = bool({a for a in qi if a >= 0} & {b for b in kj if b >= 0})
                assert bool(m[h, i, j]) == want
