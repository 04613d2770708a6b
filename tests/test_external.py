import pytest
import torch
from safetensors.torch import save_file

from bench.data.external import read_external, write_external
from bench.data.synthetic import synthetic
from bench.errors import DataError


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_round_trip_bit_for_bit(tmp_path, dtype):
    d = synthetic(samples=3, layers=2, heads=4, kv_heads=2, length=21, dim=8, causal=True, dtype=dtype)
    d.scale, d.alpha = 0.3, 1.5
    path = write_external(d, tmp_path / "x.safetensors")
    r = read_external(path)
    for name in ("q", "k", "v", "lengths"):
        a, b = getattr(d, name), getattr(r, name)
        assert a.dtype == b.dtype and torch.equal(a.view(torch.uint8), b.view(torch.uint8))
    assert (r.causal, r.scale, r.alpha, r.name) == (True, 0.3, 1.5, "synthetic")
    # Exporting what was read gives the same tensors again (header key order is not fixed by safetensors).
    r2 = read_external(write_external(r, tmp_path / "y.safetensors"))
    assert all(torch.equal(getattr(r, n).view(torch.uint8), getattr(r2, n).view(torch.uint8)) for n in ("q", "k", "v"))


def test_file_written_by_other_code_loads(tmp_path):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 1, 4, 10, 16, generator=g)
    k = torch.randn(2, 1, 1, 10, 16, generator=g)  # multi-query attention
    path = tmp_path / "theirs.safetensors"
    save_file({"q": q, "k": k, "lengths": torch.tensor([10, 7])}, str(path), metadata={"causal": "false"})
    d = read_external(path)
    assert d.scale == pytest.approx(0.25) and d.alpha == 1.5 and d.v is None and d.name == "theirs"
    assert d.layer(0).k.shape == (2, 4, 10, 16)


def bad_file(tmp_path, tensors=None, meta=None):
    g = torch.Generator().manual_seed(0)
    base = {"q": torch.randn(2, 1, 2, 6, 4, generator=g), "k": torch.randn(2, 1, 2, 6, 4, generator=g),
            "lengths": torch.tensor([6, 4])}
    base.update(tensors or {})
    base = {k: v for k, v in base.items() if v is not None}
    path = tmp_path / "bad.safetensors"
    save_file(base, str(path), metadata={"causal": "true", **(meta or {})})
    return path


@pytest.mark.parametrize("tensors, meta, message", [
    ({"q": None}, None, "tensor 'q' is missing"),
    ({"lengths": None}, None, "tensor 'lengths' is missing"),
    ({"lengths": torch.tensor([6, 4], dtype=torch.int32)}, None, "'lengths' has dtype torch.int32; expected int64"),
    ({"q": torch.zeros(2, 1, 2, 6, 4, dtype=torch.float64)}, None, "'q' has dtype torch.float64"),
    ({"extra": torch.zeros(1)}, None, "unexpected tensors"),
    (None, {"causal": "yes"}, "'causal' is 'yes'"),
    (None, {"scale": "big"}, "'scale' is 'big'; expected a number"),
    ({"k": torch.randn(2, 1, 2, 5, 4)}, None, "k has shape"),
    ({"lengths": torch.tensor([7, 4])}, None, "beyond T=6"),
])
def test_malformed_files_name_the_field(tmp_path, tensors, meta, message):
    with pytest.raises(DataError, match=message):
        read_external(bad_file(tmp_path, tensors, meta))


def test_not_a_safetensors_file(tmp_path):
    p = tmp_path / "junk.safetensors"
    p.write_bytes(b"\x00" * 20)
    with pytest.raises(DataError, match="not a readable safetensors"):
        read_external(p)
    with pytest.raises(DataError, match="does not exist"):
        read_external(tmp_path / "absent.safetensors")
