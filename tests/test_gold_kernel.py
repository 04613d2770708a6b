"""The exact 1.5-entmax support kernel (predictors.entmax.entmax15_support) against entmax.entmax15 and
entmax_bisect, and the gold built on it against the gold as it was computed before (entmax15 over every
block of scores, then ``p > 0``): torch.equal counts, cols and probs. Each test runs on both paths: the
compiled CPU kernel and the PyTorch one."""

import pytest
import torch
from entmax import entmax15, entmax_bisect

from bench.data.synthetic import synthetic
from bench.evaluation.gold import layer_gold
from bench.execution.dense import dense_attention
from predictors.entmax import PARTIAL_K, entmax15_dense, entmax15_support, largest, row_entmax
from predictors.masking import allowed_keys, block_scores, mask_scores
from predictors.support import LayerGold


@pytest.fixture(params=["compiled", "torch"], autouse=True)
def entmax_path(request, monkeypatch):
    """Every test here runs twice: with the compiled CPU kernel (predictors.entmax15_kernel) and with the
    PyTorch path that serves other devices; both must be entmax15 bit for bit."""
    import predictors.entmax

    monkeypatch.setattr(predictors.entmax, "COMPILED", request.param == "compiled")
    return request.param


def previous_layer_gold(view, block=256):
    """The gold as computed before the support kernel: entmax15 with an adaptive partial sort over the
    whole block of scores, then the nonzeros."""
    s_count, nh, t, _ = view.q.shape
    counts = torch.zeros(s_count, nh, t, dtype=torch.int64)
    cols_parts, probs_parts = [], []
    topk = PARTIAL_K
    for s in range(s_count):
        n = int(view.lengths[s])
        per_head_cols, per_head_probs = [[] for _ in range(nh)], [[] for _ in range(nh)]
        k = view.k[s, :, :n]
        for i0 in range(0, n, block):
            i1 = min(n, i0 + block)
            scores = block_scores(view.q[s, :, i0:i1], k, view.scale)
            if view.causal:
                scores = mask_scores(scores, allowed_keys(i0, i1, n, True))
            p = entmax15(scores, dim=-1, k=topk if topk < n else None)
            nz = p > 0
            counts[s, :, i0:i1] = nz.sum(-1)
            topk = max(PARTIAL_K, int(counts[s, :, i0:i1].max()) * 2)
            sizes = counts[s, :, i0:i1].sum(-1).tolist()
            cols = nz.nonzero()[:, 2].to(torch.int32)
            for h, (c, pr) in enumerate(zip(cols.split(sizes), p[nz].split(sizes))):
                per_head_cols[h].append(c)
                per_head_probs[h].append(pr)
        cols_parts += [torch.cat(c) for c in per_head_cols]
        probs_parts += [torch.cat(c) for c in per_head_probs]
    return LayerGold(counts=counts, cols=torch.cat(cols_parts), probs=torch.cat(probs_parts),
                     lengths=view.lengths.clone(), causal=view.causal)


def assert_same_gold(a, b):
    assert torch.equal(a.counts, b.counts)
    assert torch.equal(a.cols, b.cols)
    assert torch.equal(a.probs, b.probs)


def awkward_rows(seed=0):
    """Rows of every kind: random, sharp, flat (support fills any k), ties, masked, and one of each
    length below and above PARTIAL_K."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in (1, 2, 5, 16, 17, 45, 97, 130, 300):
        x = torch.randn(40, n, generator=g) * torch.tensor([0.1, 1, 3, 10]).repeat(10)[:, None]
        x[0] = 0.0  # all tied: the support is the whole row
        x[1] = torch.randint(0, 3, (n,), generator=g).float()  # ties at the threshold
        x[2, : n // 2] = -1e4  # masked half, as mask_scores sets it
        out.append(x)
    return out


def test_largest_entries_are_topk_values():
    """The groups search of predictors.entmax.largest (rows of at least 128 k entries), with and without
    a tail of ungrouped columns, ties and masked entries."""
    g = torch.Generator().manual_seed(3)
    for n, k in [(128, 1), (131, 1), (300, 2), (513, 4), (2048, PARTIAL_K), (2093, PARTIAL_K), (4100, 32)]:
        x = torch.randn(12, n, generator=g) * torch.tensor([0.1, 1, 3, 10]).repeat(3)[:, None]
        x[0] = 0.0
        x[1] = torch.randint(0, 3, (n,), generator=g).float()
        x[2, : n // 2] = -1e4
        work = torch.empty(12 * n)
        for buf in (None, work, work[:1]):  # a buffer too small is not used
            vals, cols = largest(x, k, buf)
            assert torch.equal(vals, x.topk(k, dim=-1).values) and torch.equal(x.gather(-1, cols), vals)


@pytest.mark.parametrize("k", [1, 4, PARTIAL_K, 64, None])
def test_support_kernel_is_entmax15_bit_for_bit(k):
    for x in awkward_rows():
        want = entmax15(x, dim=-1, k=k)
        got = entmax15_dense(x, k)
        assert torch.equal(got, want)
        rows, cols, probs = entmax15_support(x, k)
        nz = want.nonzero()
        assert torch.equal(rows, nz[:, 0]) and torch.equal(cols, nz[:, 1])
        assert torch.equal(probs, want[want > 0])


def test_support_kernel_agrees_with_bisection():
    for x in awkward_rows(1):
        if x.shape[-1] < 2:
            continue
        want = entmax_bisect(x.double(), alpha=1.5, dim=-1, n_iter=100)
        got = entmax15_dense(x)
        assert torch.allclose(got.double(), want, atol=1e-5)
        # The supports agree except at entries within float error of the threshold.
        differ = (got > 0) != (want > 0)
        assert (got[differ] < 1e-6).all() and (want[differ] < 1e-6).all()
        assert differ.float().mean() < 0.01


def test_row_entmax_is_entmax15_over_allowed_entries():
    g = torch.Generator().manual_seed(4)
    scores = torch.randn(3, 50, 97, generator=g) * 4
    allowed = torch.rand(3, 50, 97, generator=g) < 0.3
    allowed[0, 0] = False  # an empty row stays all zeros
    want = entmax15(mask_scores(scores, allowed), dim=-1, k=PARTIAL_K).masked_fill_(~allowed, 0.0)
    assert torch.equal(row_entmax(scores, allowed), want)
    assert not row_entmax(scores, allowed)[0, 0].any()


@pytest.mark.parametrize("causal", [False, True])
def test_dense_reference_is_entmax15_bit_for_bit(causal):
    g = torch.Generator().manual_seed(6)
    q, k = torch.randn(3, 130, 8, generator=g) * 3, torch.randn(3, 130, 8, generator=g) * 3
    scores = block_scores(q, k, 0.3)
    if causal:
        scores = mask_scores(scores, allowed_keys(0, 130, 130, True))
    got = dense_attention(q, k, None, causal, 0.3, "entmax15-topk", values=False)
    assert torch.equal(got, entmax15(scores, dim=-1, k=PARTIAL_K))


@pytest.mark.parametrize("causal", [False, True])
def test_dense_reference_is_the_gold_bit_for_bit(causal):
    """In 256-query blocks, as the gold: a last block of one query (n = 257), whose scores the BLAS may
    round differently from a product of all rows, still gives the gold's probabilities."""
    d = synthetic(samples=1, layers=1, heads=2, length=257, dim=32, causal=causal, seed=8, ragged=False)
    view = d.layer(0)
    q, k = view.q[0], view.k[0]
    got = dense_attention(q, k, None, causal, view.scale, "entmax15-topk", values=False)
    _, gold = layer_gold(view).block(0, 0, 257, 257)
    assert torch.equal(got, gold)
    scores = block_scores(q, k, view.scale)
    if causal:
        scores = mask_scores(scores, allowed_keys(0, 257, 257, True))
    assert torch.allclose(got, entmax15(scores, dim=-1, k=PARTIAL_K), atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("length,kv_heads,block", [(97, None, 256), (130, 2, 64), (45, 1, 7)])
def test_gold_is_the_previous_gold(causal, length, kv_heads, block):
    d = synthetic(samples=3, layers=2, heads=4, kv_heads=kv_heads, length=length, dim=8, causal=causal,
                  seed=length, sharpness=1.0 if causal else 3.0)  # ragged: padding in samples 1, 2
    for li in range(2):
        assert_same_gold(layer_gold(d.layer(li), block=block), previous_layer_gold(d.layer(li), block=block))


@pytest.mark.parametrize("causal", [False, True])
def test_long_gold_is_the_previous_gold(causal):
    """Rows long enough for the groups search (n >= 128 PARTIAL_K), one with a tail of ungrouped columns."""
    d = synthetic(samples=2, layers=1, heads=2, length=2100, dim=32, seed=21, causal=causal, sharpness=3.0)
    assert d.lengths.tolist() == [2100, 2093]
    assert_same_gold(layer_gold(d.layer(0)), previous_layer_gold(d.layer(0)))


@pytest.mark.slow
def test_gold_is_the_previous_gold_on_minilm():
    from bench.evaluation.prepared import prepare

    prep = prepare("minilm", samples=4, length=64)
    for part in (prep.fit, prep.val, prep.eval):
        for li in range(part.num_layers):
            assert_same_gold(layer_gold(part.layer(li)), previous_layer_gold(part.layer(li)))


def test_whole_row_fallback_is_entmax15_with_its_threshold():
    from predictors.entmax import _whole_rows, threshold15

    for x in awkward_rows(2):
        z = (x - x.amax(-1, keepdim=True)) / 2
        tau, _ = threshold15(z.sort(dim=-1, descending=True).values)
        rows, cols, probs = _whole_rows(x, tau, 1)
        want = entmax15(x, dim=-1)
        nz = want.nonzero()
        assert torch.equal(rows, nz[:, 0]) and torch.equal(cols, nz[:, 1]) and torch.equal(probs, want[want > 0])


def test_peak_growth_sees_tensor_storage():
    from bench.execution.memory import peak_growth

    out, peak, how = peak_growth(lambda: torch.ones(10_000_000).sum())
    assert out == 1e7 and how in ("vmhwm", "maxrss")
    if how == "vmhwm":  # 40 MB of tensor storage, which tracemalloc would not see
        assert 30e6 < peak < 80e6
