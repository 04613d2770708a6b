"""The compiled 1.5-entmax kernel (predictors.entmax15_kernel, through predictors.entmax) against
entmax.entmax15 and against the PyTorch path it stands in for on the CPU: the same floats (torch.equal),
on random, tied, flat, masked and padded rows, written into strided outputs."""

import numpy as np
import pytest
import torch
from entmax import entmax15
from hypothesis import given, settings
from hypothesis import strategies as st

import predictors.entmax as E
from bench.execution.row_entmax import entmax15_rows
from predictors.masking import MASK_GAP, mask_scores


def torch_path(fn, *args, **kwargs):
    """``fn`` run with the compiled kernel switched off (the PyTorch path)."""
    E.COMPILED = False
    try:
        return fn(*args, **kwargs)
    finally:
        E.COMPILED = True


def rows(r, n, spread, ties, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(r, n, generator=g) * spread
    return x.round() if ties else x


@settings(max_examples=60, deadline=None)
@given(r=st.integers(1, 30), n=st.integers(1, 700), spread=st.sampled_from([1e-3, 0.3, 1.0, 4.0, 50.0]),
       ties=st.booleans(), k=st.sampled_from([1, 3, 16, None]), seed=st.integers(0, 2**31 - 1))
def test_kernel_is_entmax15_and_the_torch_path(r, n, spread, ties, k, seed):
    x = rows(r, n, spread, ties, seed)
    want = entmax15(x, dim=-1, k=k)
    assert torch.equal(E.entmax15_dense(x, k), want)
    assert torch.equal(E.entmax15_dense(x, k), torch_path(E.entmax15_dense, x, k))
    counts, cols, probs = E.support_counts(x, k)
    nz = want.nonzero()
    assert torch.equal(counts, (want > 0).sum(-1)) and torch.equal(cols.long(), nz[:, 1])
    assert torch.equal(probs, want[want > 0])
    got = E.entmax15_support(x, k)
    for a, b in zip(got, torch_path(E.entmax15_support, x, k)):
        assert torch.equal(a, b)


def test_flat_rows_widen_as_entmax15_does():
    """Supports of 17-600 entries: the partial sort of 16 is widened (32, 64, ...) exactly as the library
    widens it, so a support larger than the first window is found whole."""
    x = torch.zeros(4, 600)
    x[1, :40] = 1.0
    x[2] = torch.linspace(0, 0.5, 600)
    x[3, :17] = 2.0
    want = entmax15(x, dim=-1, k=16)
    assert (want > 0).sum(-1).tolist() == [600, 40, 258, 17]
    assert torch.equal(E.entmax15_dense(x, 16), want)


def test_masked_rows_into_a_strided_output():
    """dense_into with allowed entries writes the same floats as entmax15 over the masked scores into a
    block of a larger output (strides not its own), and rows without any allowed entry stay zero."""
    g = torch.Generator().manual_seed(5)
    scores = torch.randn(2, 30, 50, generator=g) * 3
    allowed = torch.rand(2, 30, 50, generator=g) < 0.4
    allowed[0, 3] = False
    want = entmax15(mask_scores(scores, allowed), dim=-1, k=16).masked_fill_(~allowed, 0.0)
    big = torch.zeros(2, 40, 50)
    E.dense_into(big[:, 5:35], scores.reshape(60, 50), 16, allowed.reshape(60, 50))
    assert torch.equal(big[:, 5:35], want) and not big[:, :5].any() and not big[:, 35:].any()
    assert not big[0, 8].any()


@settings(max_examples=40, deadline=None)
@given(r=st.integers(1, 20), m=st.integers(1, 300), keep=st.floats(0.0, 1.0), ties=st.booleans(),
       seed=st.integers(0, 2**31 - 1))
def test_sparse_execution_rows_are_the_torch_path(r, m, keep, ties, seed):
    """entmax15_rows (the sparse execution's probabilities): the kernel gives the PyTorch path's floats,
    padding rows (nothing allowed) all zero."""
    x = rows(r, m, 3.0, ties, seed)
    allowed = torch.rand(r, m, generator=torch.Generator().manual_seed(seed + 1)) < keep
    x = torch.where(allowed, x, torch.full_like(x, -MASK_GAP))
    got = entmax15_rows(x.clone(), allowed)
    assert torch.equal(got, torch_path(entmax15_rows, x.clone(), allowed))
    assert not got[~allowed.any(-1)].any()


def test_kernel_uses_torchs_square_root():
    """torch's float32 sqrt on the CPU is not always the correctly rounded one: where it differs, the
    kernel's thresholds follow torch's (so its probabilities are entmax15's bits, not numpy's)."""
    d = torch.rand(200_000, generator=torch.Generator().manual_seed(0))
    differ = torch.from_numpy(np.sqrt(d.numpy())) != d.sqrt()
    if not differ.any():
        pytest.skip("this torch build's float32 sqrt is correctly rounded: nothing to tell apart")
    x = rows(3000, 5, 1.0, False, 1)  # 5-entry rows: supports of 2-5, a sqrt in every threshold
    assert torch.equal(E.entmax15_dense(x, 16), entmax15(x, dim=-1, k=16))


def test_other_devices_and_dtypes_take_the_torch_path():
    assert E.uses_kernel(torch.zeros(2, 3))
    assert not E.uses_kernel(torch.zeros(2, 3, dtype=torch.float64))
    assert not E.uses_kernel(torch.zeros(2, 3, requires_grad=True))
    x = rows(7, 40, 2.0, False, 3).double()
    assert torch.equal(E.entmax15_dense(x, 16), entmax15(x, dim=-1, k=16))


def test_support_values_is_a_known_sum():
    """Two heads, blocks of two rows: row r reads head r // 2; an empty row gives zeros."""
    values = torch.arange(2 * 3 * 2, dtype=torch.float32).view(2, 3, 2)  # head 1 holds 6..11
    counts = torch.tensor([2, 0, 1, 1])
    cols = torch.tensor([0, 2, 1, 0], dtype=torch.int32)
    probs = torch.tensor([0.25, 0.75, 1.0, 0.5])
    got = E.support_values(counts, cols, probs, values, 2)
    want = torch.tensor([[0.25 * 0 + 0.75 * 4, 0.25 * 1 + 0.75 * 5], [0, 0], [8, 9], [3, 3.5]])
    assert torch.equal(got, want)


@pytest.mark.parametrize("causal", [False, True])
def test_dense_output_is_entmax15_times_values(causal):
    """entmax15-topk with values (P V over the support on the CPU; the product elsewhere) against
    entmax15's probabilities times v, over blocks of 256 queries and a last block of one."""
    from bench.execution.dense import dense_attention
    from predictors.masking import allowed_keys, block_scores

    g = torch.Generator().manual_seed(9)
    q, k, v = (torch.randn(3, 257, 16, generator=g) * 2 for _ in range(3))
    scores = block_scores(q, k, 0.25)
    if causal:
        scores = mask_scores(scores, allowed_keys(0, 257, 257, True))
    want = entmax15(scores, dim=-1, k=16) @ v
    got = dense_attention(q, k, v, causal, 0.25, "entmax15-topk")
    assert torch.allclose(got, want, atol=1e-5)
    assert torch.allclose(torch_path(dense_attention, q, k, v, causal, 0.25, "entmax15-topk"), want, atol=1e-5)


def test_keyed_values_is_a_known_sum():
    """Rows 0-1 share key row 0 (factor 2), rows 2-3 key row 1; entries index those keys."""
    values = torch.arange(10, dtype=torch.float32).view(5, 2)  # row j holds (2j, 2j + 1)
    keys = torch.tensor([[4, 1], [0, 3]])
    counts = torch.tensor([1, 2, 0, 1])
    cols = torch.tensor([0, 0, 1, 1], dtype=torch.int32)
    probs = torch.tensor([1.0, 0.5, 0.5, 0.25])
    got = E.keyed_values(counts, cols, probs, keys, 2, values)
    want = torch.tensor([[8, 9], [0.5 * 8 + 0.5 * 2, 0.5 * 9 + 0.5 * 3], [0, 0], [0.25 * 6, 0.25 * 7]])
    assert torch.equal(got, want)



@pytest.mark.parametrize("causal", [False, True])
def test_band_support_is_support_counts_over_the_built_mask(causal):
    """Code-block rows with masks from structure (widths, causal positions) give support_counts' floats
    over the scaled block with that mask built, and the allowed counts of that mask."""
    g = torch.Generator().manual_seed(8)
    nch, chunk, w, scale = 5, 4, 37, 0.37
    raw = torch.randn(nch * chunk, w, generator=g) * 6
    widths = torch.randint(0, w + 1, (nch * chunk,), generator=g)
    widths[3] = 0  # an empty slot
    kpos = torch.randint(0, 50, (nch, w), generator=g)
    qpos = torch.randint(0, 50, (nch * chunk,), generator=g)
    allowed = torch.arange(w)[None, :] < widths[:, None]
    if causal:
        allowed &= kpos.repeat_interleave(chunk, 0) <= qpos[:, None]
    counts, cols, probs, n_allowed = E.band_support(raw, scale, widths, chunk, causal, kpos, qpos, 16)
    want = E.support_counts(raw.clone().mul_(scale), 16, allowed)
    assert torch.equal(n_allowed, allowed.sum(-1)) and n_allowed[3] == 0
    for a, b in zip((counts, cols, probs), want):
        assert torch.equal(a, b)
    assert counts.sum() > 0
