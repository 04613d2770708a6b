"""Tests of the entmax-lm attention source: a tiny model, a small generated corpus, a cache in tmp_path."""

from __future__ import annotations

import math
import random
from dataclasses import asdict

import pytest
import torch
from entmax import entmax15
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.data import cache
from bench.data import entmax_lm as elm
from bench.data.corpora import Corpus
from bench.errors import DataError
from bench.evaluation.gold import compute_gold
from predictors.masking import allowed_keys, block_scores, mask_scores

TINY = elm.EntmaxLMConfig(layers=2, heads=2, width=32, context=64, mlp_ratio=2, lr=1e-2,
                          schedule=((0.3, 32, False), (0.3, 32, True)))
STEPS, BATCH = 30, 8
# One thread: a tiny model gains nothing from two, and on a busy machine waits for the second.
THREADS = 1
# A cheap model for the cache and data tests: what matters there is bookkeeping, not quality.
QUICK = dict(config=TINY, steps=5, batch=4, threads=THREADS)
WORDS = ("the cat sat on a mat and then it ran to the red door where an old dog slept in warm sun "
         "while birds sang of rain").split()


def _text(paragraphs: int = 300, seed: int = 0) -> str:
    rng = random.Random(seed)
    paras = []
    for _ in range(paragraphs):
        # Paragraph lengths from a few words to a few lines, so windows end at real boundaries.
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 30))]
        paras.append(" ".join(words).capitalize() + ".")
    return "\n\n".join(paras) + "\n"


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return Corpus(name="t", text=_text())


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.ENV_VAR, str(tmp_path))
    return tmp_path


@pytest.fixture(scope="module")
def trained(corpus):
    return elm.train_entmax_lm(corpus, TINY, seed=3, steps=STEPS, batch=BATCH, threads=THREADS)


def _windows(corpus, n=4, t=48):
    _, heldout = elm.split_corpus(corpus)
    return torch.stack([elm.byte_tensor(heldout[i * t : (i + 1) * t]) for i in range(n)])


def test_same_seed_gives_identical_weights_and_captures(corpus, trained):
    model, report = trained
    again, report2 = elm.train_entmax_lm(corpus, TINY, seed=3, steps=STEPS, batch=BATCH, threads=THREADS)
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name
    assert report["heldout_bpc"] == report2["heldout_bpc"]
    x = _windows(corpus)
    with torch.no_grad():
        _, c1 = model(x, capture=True)
        _, c2 = again(x, capture=True)
    assert torch.equal(c1["q"], c2["q"]) and torch.equal(c1["k"], c2["k"])
    other, _ = elm.train_entmax_lm(corpus, TINY, seed=4, steps=2, batch=BATCH, threads=THREADS)
    assert not torch.equal(other.tok.weight, model.tok.weight)


@pytest.mark.slow
def test_training_leaves_threads_and_global_rng_alone(corpus):
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    elm.train_entmax_lm(corpus, TINY, seed=0, steps=1, batch=2)
    assert torch.equal(torch.rand(3), expected)
    assert torch.get_num_threads() == threads


def test_loss_decreases_with_training(corpus, trained):
    model, report = trained
    _, heldout = elm.split_corpus(corpus)
    untrained = elm.EntmaxLM(TINY)
    untrained.reset_parameters(torch.Generator().manual_seed(3))
    # Small random init: nearly uniform over 256 bytes, i.e. about 8 bits per byte.
    assert elm.heldout_bpc(untrained, heldout) == pytest.approx(8.0, abs=0.1)
    assert report["heldout_bpc"] == pytest.approx(elm.heldout_bpc(model, heldout), rel=1e-6)
    assert report["heldout_bpc"] < 5.0
    assert report["train_bpc_end"] < report["train_bpc_start"] - 2.0
    assert report["steps"] == STEPS and report["batch"] == BATCH
    assert report["params"] == sum(p.numel() for p in model.parameters())


def test_captured_qk_reproduce_the_models_attention(corpus, trained):
    model, _ = trained
    x = _windows(corpus, n=3, t=45)
    lengths = torch.tensor([45, 33, 40])
    with torch.no_grad():
        logits, cap = model(x, lengths=lengths, capture=True)
    b, nl, nh, t, dh = cap["q"].shape
    assert (b, nl, nh, t, dh) == (3, TINY.layers, TINY.heads, 45, TINY.head_dim)
    assert cap["k"].shape == cap["v"].shape == cap["q"].shape and cap["q"].dtype == torch.float32
    assert cap["probs"].shape == (3, nl, nh, t, t) and logits.shape == (3, t, 256)
    assert model.scale == 1 / math.sqrt(dh)
    for s in range(b):
        n = int(lengths[s])
        for layer in range(nl):
            # Recomputed the way the gold graph does it: block_scores, mask_scores, entmax15.
            scores = block_scores(cap["q"][s, layer, :, :n], cap["k"][s, layer, :, :n], model.scale)
            p = entmax15(mask_scores(scores, allowed_keys(0, n, n, causal=True)), dim=-1)
            used = cap["probs"][s, layer, :, :n, :n]
            torch.testing.assert_close(p, used, atol=1e-5, rtol=0)
            # Same support, up to entries at the threshold (matmuls of other shapes round differently).
            differ = (p > 0) != (used > 0)
            assert float(torch.maximum(p, used)[differ].sum()) < 1e-5
            # Valid rows never put mass on padding or the future, and sum to one.
            assert float(cap["probs"][s, layer, :, :n, n:].abs().sum()) == 0.0
            assert float(torch.triu(used, diagonal=1).abs().max()) == 0.0
            torch.testing.assert_close(used.sum(-1), torch.ones(nh, n))
    # Trained attention is sparse: many allowed keys get exactly zero probability.
    probs = cap["probs"][0, :, :, :45, :45]
    allowed = torch.tril(torch.ones(45, 45, dtype=torch.bool))
    assert float((probs[..., allowed] == 0).float().mean()) > 0.2


def test_future_bytes_do_not_change_past_logits(corpus, trained):
    model, _ = trained
    x = _windows(corpus, n=2, t=50)
    y = x.clone()
    y[:, 30:] = torch.randint(256, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = model(x), model(y)
    assert torch.equal(a[:, :30], b[:, :30])
    assert not torch.allclose(a[:, 30:], b[:, 30:])
    # Padding is invisible to valid positions too.
    with torch.no_grad():
        c = model(x, lengths=torch.tensor([30, 50]))
    assert torch.equal(c[0, :30], a[0, :30]) and torch.equal(c[1], a[1])


def test_attention_hook_with_default_attention_gives_identical_logits(corpus, trained):
    model, _ = trained
    x = _windows(corpus, n=2, t=40)
    lengths = torch.tensor([40, 35])
    seen = []

    def hook(layer, q, k, v, n):
        seen.append((layer, tuple(q.shape), n.tolist()))
        return elm.entmax_attention(q, k, v, n, model.scale)

    with torch.no_grad():
        ref = model(x, lengths=lengths)
        out, cap = model(x, lengths=lengths, capture=True, attention=hook)
    assert torch.equal(out, ref)
    assert seen == [(layer, (2, TINY.heads, 40, TINY.head_dim), [40, 35]) for layer in range(TINY.layers)]
    assert "probs" not in cap and cap["q"].shape == (2, TINY.layers, TINY.heads, 40, TINY.head_dim)
    # The partial-sort width is a speed setting only: rows whose support exceeds it are redone.
    q, k, v = (cap[name][:, 1] for name in ("q", "k", "v"))
    full = elm.entmax_attention(q, k, v, lengths, model.scale, return_probs=True, topk=None)
    assert int((full[1] > 0).sum(-1).max()) > 2
    for topk in (1, 2, 5):
        part = elm.entmax_attention(q, k, v, lengths, model.scale, return_probs=True, topk=topk)
        assert torch.equal(part[0], full[0]) and torch.equal(part[1], full[1])
    # A different attention changes the output: the hook is really used.
    uniform = lambda layer, q, k, v, n: v.cumsum(-2) / torch.arange(1, v.shape[-2] + 1)[:, None]
    with torch.no_grad():
        assert not torch.allclose(model(x, attention=uniform), ref)
    with pytest.raises(DataError, match="attention hook returned"):
        model(x, attention=lambda layer, q, k, v, n: q[..., :-1])


def test_cache_round_trip_and_corrupt_entry(corpus, tmp_cache, monkeypatch):
    model, report = elm.load_entmax_lm(corpus, seed=1, **QUICK)
    files = list(tmp_cache.glob("entmax-lm-*.safetensors"))
    assert len(files) == 1 and report["descriptor_key"] in files[0].name

    def no_training(*args, **kwargs):
        raise AssertionError("retrained although the entry is cached")

    real_train = elm.train_entmax_lm
    monkeypatch.setattr(elm, "train_entmax_lm", no_training)
    again, report2 = elm.load_entmax_lm(corpus, seed=1, **QUICK)
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name
    assert report2 == report and report2["steps"] == 5
    d1 = elm.entmax_lm_data(corpus, samples=3, length=64, seed=0, model_seed=1, **QUICK)
    d2 = elm.entmax_lm_data(corpus, samples=3, length=64, seed=0, model_seed=1, **QUICK)
    assert torch.equal(d1.q, d2.q) and torch.equal(d1.k, d2.k) and torch.equal(d1.v, d2.v)
    assert d1.descriptor == d2.descriptor

    # Another seed is another entry: it trains.
    with pytest.raises(AssertionError, match="retrained"):
        elm.load_entmax_lm(corpus, seed=2, **QUICK)

    data = bytearray(files[0].read_bytes())
    data[-20:] = bytes(20)
    files[0].write_bytes(bytes(data))
    monkeypatch.setattr(elm, "train_entmax_lm", real_train)
    with pytest.warns(UserWarning, match="rebuilding"):
        rebuilt, _ = elm.load_entmax_lm(corpus, seed=1, **QUICK)
    for (name, a), (_, b) in zip(model.state_dict().items(), rebuilt.state_dict().items()):
        assert torch.equal(a, b), name
    assert cache.load_entry(elm.KIND, elm.model_descriptor(corpus, TINY, 1, 5, 4, THREADS)) is not None


def test_entmax_lm_data_shapes_lengths_and_descriptor(corpus, tmp_cache):
    data = elm.entmax_lm_data(corpus, samples=5, length=60, seed=2, **QUICK)
    assert data.q.shape[:3] == (5, TINY.layers, TINY.heads) and data.q.shape[4] == TINY.head_dim
    assert data.q.dtype == data.k.dtype == data.v.dtype == torch.float32
    assert data.causal and data.alpha == 1.5 and data.scale == 1 / math.sqrt(TINY.head_dim)
    assert data.name == "entmax-lm"
    assert data.lengths.dtype == torch.int64
    assert int(data.lengths.min()) >= elm.MIN_SAMPLE_LEN and int(data.lengths.max()) <= 60
    assert data.q.shape[3] == int(data.lengths.max())
    d = data.descriptor
    assert d["source"] == "entmax-lm" and d["corpus_sha256"] == corpus.sha256
    assert (d["samples"], d["length"], d["seed"], d["steps"], d["batch"]) == (5, 60, 2, 5, 4)
    assert d["config"]["width"] == TINY.width and math.isfinite(d["heldout_bpc"])
    # The gold graph of the data is the support of the model's own attention on those windows.
    model, _ = elm.load_entmax_lm(corpus, **QUICK)
    _, heldout = elm.split_corpus(corpus)
    windows = elm.sample_windows(heldout, 5, 60, 2)
    assert [len(w) for w in windows] == data.lengths.tolist()
    x = torch.full((5, data.max_len), ord(" "), dtype=torch.long)
    for i, w in enumerate(windows):
        x[i, : len(w)] = elm.byte_tensor(w)
    with torch.no_grad():
        _, cap = model(x, lengths=data.lengths, capture=True)
    gold = compute_gold(data)
    valid = torch.arange(data.max_len)[None, :] < data.lengths[:, None]  # [S, T]
    for layer in range(TINY.layers):
        counts = (cap["probs"][:, layer] > 0).sum(-1) * valid[:, None]
        assert float((counts != gold.layers[layer].counts).float().mean()) < 0.01
    assert 0.0 < float(gold.sparsity().mean()) < 1.0
    other = elm.entmax_lm_data(corpus, samples=5, length=60, seed=3, **QUICK)
    assert not torch.equal(other.lengths, data.lengths) or not torch.equal(other.q, data.q)
    with pytest.raises(DataError, match="length must be"):
        elm.entmax_lm_data(corpus, length=TINY.context + 1, **QUICK)


def test_sample_windows_come_from_heldout_text_at_document_starts(corpus):
    train, heldout = elm.split_corpus(corpus)
    raw = corpus.text.encode()
    assert train + heldout == raw
    assert len(heldout) == pytest.approx(elm.HELDOUT_FRACTION * len(raw), rel=0.2)
    assert train.endswith(b"\n") and not heldout[:1].isspace()
    windows = elm.sample_windows(heldout, samples=6, length=60, seed=0)
    assert windows == elm.sample_windows(heldout, samples=6, length=60, seed=0)
    assert windows != elm.sample_windows(heldout, samples=6, length=60, seed=1)
    starts = []
    for w in windows:
        assert elm.MIN_SAMPLE_LEN <= len(w) <= 60
        start = heldout.find(w)
        assert start >= 0 and (start == 0 or heldout[start - 2 : start] == b"\n\n")
        starts.append(start)
    # Distinct, non-overlapping windows; several end at a document end, so lengths vary.
    spans = sorted((s, s + len(w)) for s, w in zip(starts, windows))
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    assert len({len(w) for w in windows}) > 1
    with pytest.raises(DataError, match="asked for 10000 samples"):
        elm.sample_windows(heldout, samples=10000, length=60, seed=0)


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(0, 150), min_size=1, max_size=40), length=st.integers(32, 97),
       samples=st.integers(1, 5), seed=st.integers(0, 2**31 - 1))
def test_sample_windows_properties(sizes, length, samples, seed):
    # Paragraph i starts with the unique tag <i>, so a window's start is found unambiguously.
    text = b"\n\n".join(f"<{i}>".encode() + b"x" * n for i, n in enumerate(sizes))
    try:
        windows = elm.sample_windows(text, samples=samples, length=length, seed=seed)
    except DataError as exc:
        assert "asked for" in str(exc)
        return
    assert len(windows) == samples
    spans = []
    for w in windows:
        start = text.find(w)
        end = start + len(w)
        assert elm.MIN_SAMPLE_LEN <= len(w) <= length
        assert start == 0 or text[start - 2 : start] == b"\n\n"
        # Whole paragraphs, or a cut at exactly ``length`` bytes.
        assert len(w) == length or end == len(text) or text[end : end + 2] == b"\n\n"
        spans.append((start, end))
    spans.sort()
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    # The first draws do not depend on how many are asked for.
    if samples > 1:
        assert elm.sample_windows(text, samples=samples - 1, length=length, seed=seed) == windows[:-1]


def test_bad_inputs_are_reported():
    with pytest.raises(DataError, match="not divisible"):
        elm.EntmaxLMConfig(width=30, heads=4)
    with pytest.raises(DataError, match="schedule"):
        elm.EntmaxLMConfig(schedule=((0.8, 64, False), (0.5, 128, True)))
    with pytest.raises(DataError, match="schedule"):
        elm.EntmaxLMConfig(schedule=((0.8, 64),))
    model = elm.EntmaxLM(TINY)
    with pytest.raises(DataError, match="context"):
        model(torch.zeros(1, TINY.context + 1, dtype=torch.long))
    with pytest.raises(DataError, match="int64"):
        model(torch.zeros(1, 4))
    with pytest.raises(DataError, match="lengths"):
        model(torch.zeros(2, 4, dtype=torch.long), lengths=torch.tensor([0, 4]))
    with pytest.raises(DataError, match="training bytes"):
        elm.train_entmax_lm(Corpus(name="tiny", text="ab\n\ncd"), TINY, steps=1, batch=1)


def test_length_schedule():
    cfg = elm.EntmaxLMConfig(context=256, schedule=[[0.5, 64, False], [0.25, 128, True]])
    assert cfg.schedule == ((0.5, 64, False), (0.25, 128, True))  # as read back from JSON
    phases = [cfg.phase_at(s, 8) for s in range(8)]
    assert phases == [(64, False)] * 4 + [(128, True)] * 2 + [(256, False)] * 2
    assert elm.EntmaxLMConfig(schedule=()).phase_at(0, 5) == (256, False)
    assert elm.EntmaxLMConfig(**asdict(cfg)) == cfg
