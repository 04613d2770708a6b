import pytest
import torch

from bench.data.synthetic import synthetic
from bench.errors import DataError
from predictors.data import AttentionData


def make(**over):
    d = synthetic(samples=3, layers=1, heads=4, length=20, dim=8)
    kw = dict(q=d.q, k=d.k, v=d.v, lengths=d.lengths, causal=False)
    kw.update(over)
    return AttentionData(**kw)


def test_valid_data_and_default_scale():
    d = make()
    assert d.scale == pytest.approx(8 ** -0.5)
    assert d.num_heads == 4 and d.max_len == 20


@pytest.mark.parametrize("field, value", [("q", float("nan")), ("k", float("inf")), ("v", float("-inf"))])
def test_nan_or_inf_at_valid_positions_is_rejected(field, value):
    d = synthetic(samples=2, layers=1, heads=2, length=10, dim=4)
    t = getattr(d, field).clone()
    t[1, 0, 1, 2, 3] = value
    with pytest.raises(DataError, match=rf"{field} holds NaN or inf at .* \(1, 0, 1, 2, 3\)"):
        make(**{"q": d.q, "k": d.k, "v": d.v, "lengths": d.lengths, field: t})


def test_nan_in_padding_is_allowed():
    d = synthetic(samples=2, layers=1, heads=2, length=10, dim=4)  # sample 1 has 3 valid tokens
    q = d.q.clone()
    q[1, :, :, 5:] = float("nan")
    make(q=q, k=d.k, v=d.v, lengths=d.lengths)


@pytest.mark.parametrize("length, message", [(0, "length 0"), (1, "length 1"), (21, "beyond T=20")])
def test_bad_lengths(length, message):
    with pytest.raises(DataError, match=message):
        make(lengths=torch.tensor([20, length, 5]))


def test_shape_and_dtype_mismatches():
    d = make()
    with pytest.raises(DataError, match="not divisible"):
        make(k=d.k[:, :, :3], v=d.v[:, :, :3])
    with pytest.raises(DataError, match="expected 5 dimensions"):
        make(q=d.q[0])
    with pytest.raises(DataError, match="k has shape"):
        make(k=d.k[:, :, :, :10])
    with pytest.raises(DataError, match="share one dtype"):
        make(k=d.k.double())
    with pytest.raises(DataError, match="dtype torch.int64"):
        make(q=d.q.long())
    with pytest.raises(DataError, match="lengths must be an int64"):
        make(lengths=d.lengths.int())


def test_grouped_query_heads_expand():
    d = synthetic(samples=2, layers=1, heads=4, kv_heads=2, length=12, dim=4)
    view = d.layer(0)
    assert view.k.shape[1] == 4
    assert torch.equal(view.k[:, 1], d.k[:, 0, 0]) and torch.equal(view.k[:, 2], d.k[:, 0, 1])


def test_split_is_by_sample_and_trims_padding():
    d = synthetic(samples=5, layers=1, heads=2, length=30, dim=4)
    fit, ev = d.split(0.4)
    assert fit.descriptor["samples"] == [0, 1] and ev.descriptor["samples"] == [2, 3, 4]
    assert torch.equal(ev.q, d.q[2:5, :, :, : int(d.lengths[2:].max())])
    assert ev.max_len == int(d.lengths[2])
    with pytest.raises(DataError, match="at least 2 samples"):
        d.select([0]).split()
