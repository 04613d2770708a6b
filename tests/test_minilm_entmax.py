"""Tests of the minilm-entmax source: MiniLM fine-tuned with entmax attention, a tiny recipe, a cache in tmp_path."""

from __future__ import annotations

import json
import math

import pytest
import torch
from entmax import entmax15

from bench.data import minilm_entmax as mle
from bench.data import minilm_entmax_train as mlt
from bench.data.corpora import Corpus, load_corpus
from bench.data.minilm import capture_texts, draw_texts, load_minilm, target_lengths, tokenize
from bench.data.sources import known_sources, load_source
from bench.errors import DataError
from bench.evaluation.gold import compute_gold
from bench.progress import Step

# A few short texts a step and a small held-out report: seconds, not minutes.
TINY = mlt.MiniLMEntmaxConfig(tokens_per_step=48, min_length=12, max_length=24, eval_texts=3, eval_length=24)
STEPS = 2


@pytest.fixture(scope="module")
def corpus():
    return load_corpus("pydoc")


@pytest.fixture(scope="module")
def trained(corpus):
    return mlt.train_minilm_entmax(corpus, TINY, seed=3, steps=STEPS)


def test_training_is_deterministic_from_its_seed(corpus, trained):
    model, report = trained
    again, report2 = mlt.train_minilm_entmax(corpus, TINY, seed=3, steps=STEPS)
    assert model.weights.keys() == again.weights.keys()
    assert all(torch.equal(model.weights[n], again.weights[n]) for n in model.weights)
    same = lambda r: {k: v for k, v in r.items() if k not in ("train_seconds", "train_cpu_seconds")}
    assert same(report) == same(report2)
    other, _ = mlt.train_minilm_entmax(corpus, TINY, seed=4, steps=STEPS)
    name = "encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(model.weights[name], other.weights[name])


def test_training_changes_the_encoder_only_and_reports(trained):
    model, report = trained
    wheel = load_minilm().weights
    assert all(model.weights[n] is wheel[n] for n in wheel if not n.startswith("encoder."))
    assert not torch.equal(model.weights["encoder.layer.5.output.dense.weight"],
                           wheel["encoder.layer.5.output.dense.weight"])
    assert report["steps"] == STEPS and report["params"] == sum(t.numel() for n, t in wheel.items()
                                                                 if n.startswith("encoder."))
    assert len(report["heldout_sparsity"]) == 6 and len(report["heldout_sparsity"][0]) == 12
    assert 0 < report["heldout_sparsity_mean"] < 1 and -1 <= report["heldout_cosine"] <= 1
    assert report["heldout_texts"] == TINY.eval_texts and report["train_documents"] > report["heldout_documents"]


def test_distillation_loss_goes_down_on_a_fixed_batch(corpus, monkeypatch):
    batch = tokenize(draw_texts(corpus.documents(), 3, 20, seed=1), 20)
    monkeypatch.setattr(mlt, "training_batch", lambda docs, gen, config: batch)
    teacher = load_minilm()
    trainable = {n: torch.nn.Parameter(t.clone()) for n, t in teacher.weights.items() if n.startswith("encoder.")}
    student = mlt.MiniLM(weights={**teacher.weights, **trainable})
    log_c = torch.nn.Parameter(torch.zeros(6, 12))
    config = mlt.MiniLMEntmaxConfig(warmup=0.0, final_lr_fraction=1.0)
    losses = mlt._train_loop(student, teacher, trainable, log_c, [], torch.Generator(), config, 6, "t", False)
    assert losses[0] > 0.05  # entmax swapped in: far from the softmax model at first
    assert losses[-1] < 0.8 * losses[0] and all(b < a for a, b in zip(losses, losses[1:]))


def test_distillation_loss_is_zero_for_the_teacher_itself():
    h = torch.randn(2, 5, 384)
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    loss, token, sentence = mlt.distillation_loss(h, h.clone(), mask)
    assert abs(loss.item()) < 1e-6
    other = h.clone()
    other[1, 3:] = torch.randn(2, 384)  # padding differs: no effect
    assert abs(mlt.distillation_loss(h, other, mask)[0].item()) < 1e-6
    assert mlt.distillation_loss(h, -h, mask)[1].item() == pytest.approx(2.0)


def test_entmax_attention_is_sparse_normalised_and_ignores_padding():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 12, 9, 32, generator=g) * 2 for _ in range(3))
    mask = torch.tensor([[True] * 9, [True] * 6 + [False] * 3])
    hook = mlt.EntmaxAttention(record=True, keep_scores=True)
    out = hook(0, q, k, v, mask)
    scores = torch.matmul(q, k.transpose(-1, -2)) * mlt.SCALE
    p1 = entmax15(scores[1, :, :, :6], dim=-1)  # the second sample on its 6 valid keys only
    assert torch.allclose(out[1], p1 @ v[1, :, :6], atol=1e-6)
    assert torch.equal(hook.scores[0][0], scores)
    sparsity = hook.sparsity()
    assert sparsity.shape == (1, 12) and float(sparsity.min()) > 0  # entmax gives exact zeros
    expected = ((p1[:, :6] == 0).sum((1, 2)) / 36 + (entmax15(scores[0], dim=-1) == 0).sum((1, 2)) / 81) / 2
    assert torch.allclose(sparsity[0], expected)


def test_folded_temperatures_give_the_same_model(corpus):
    teacher = load_minilm()
    log_c = torch.randn(6, 12, generator=torch.Generator().manual_seed(2)) * 0.3
    encoder = {n: t for n, t in teacher.weights.items() if n.startswith("encoder.")}
    folded = mlt.MiniLM(weights={**teacher.weights, **mlt.fold_temperatures(encoder, log_c)})
    ids, mask = tokenize(draw_texts(corpus.documents(), 2, 30, seed=0), 30)
    a, _ = teacher.forward(ids, mask, attention=mlt.EntmaxAttention(log_c))
    b, _ = folded.forward(ids, mask, attention=mlt.EntmaxAttention())
    assert torch.allclose(a, b, atol=1e-4)
    assert (a - b).abs().max() > 0 or bool((log_c == 0).all())  # really another model, not the same tensors


def test_documents_split_by_position(corpus):
    train, heldout = mlt.split_documents(corpus, 0.1)
    docs = corpus.documents()
    assert train + heldout == docs and len(heldout) == round(0.1 * len(docs))
    with pytest.raises(DataError, match="at least 2"):
        mlt.split_documents(Corpus(name="one", text="just one paragraph"), 0.1)


def test_source_data_is_the_models_own_attention_on_heldout_texts(corpus):
    data = mle.minilm_entmax_data(corpus, samples=3, length=24, seed=5, steps=STEPS, model_seed=3, config=TINY)
    assert data.q.shape[:3] == (3, 6, 12) and data.head_dim == 32 and data.name == "minilm-entmax"
    assert not data.causal and data.scale == 1 / math.sqrt(32) and data.alpha == 1.5
    assert int(data.lengths.min()) >= 12 and int(data.lengths.max()) <= 24 and data.q.shape[3] == data.lengths.max()
    # The same texts again, drawn from the held-out documents only, through the model with a recording hook.
    model, report = mle.load_minilm_entmax(corpus, TINY, seed=3, steps=STEPS)
    texts = draw_texts(mlt.split_documents(corpus, 0.1)[1], 3, min_words=24, seed=5)
    hook = mlt.EntmaxAttention(keep_scores=True)
    q, k, _, lengths = capture_texts(model, texts, target_lengths(3, 24, 5), 8, Step("x", enabled=False), hook)
    assert torch.equal(q, data.q) and torch.equal(k, data.k) and torch.equal(lengths, data.lengths)
    gold = compute_gold(data)
    for layer in range(6):
        own = hook.scores[layer][0]  # [3, 12, T, T]: the logits the model's entmax saw
        assert torch.equal(torch.matmul(data.q[:, layer], data.k[:, layer].transpose(-1, -2)) * data.scale, own)
        for s in range(3):
            n = int(data.lengths[s])
            support = entmax15(own[s, :, :n, :n], dim=-1) > 0
            assert torch.equal(gold.layers[layer].block(s, 0, n, n)[0], support)
    d = data.descriptor
    assert d["source"] == "minilm-entmax" and d["corpus_sha256"] == corpus.sha256 and d["steps"] == STEPS
    assert d["model_key"] == report["descriptor_key"] and d["heldout_cosine"] == report["heldout_cosine"]


def test_the_model_is_cached(corpus, monkeypatch, isolated_cache):
    model, report = mle.load_minilm_entmax(corpus, TINY, seed=1, steps=1)
    assert len(list(isolated_cache.glob("minilm-entmax-*.safetensors"))) == 1

    def no_training(*a, **k):
        raise AssertionError("trained again instead of reading the cache")

    monkeypatch.setattr(mle, "train_minilm_entmax", no_training)
    again, report2 = mle.load_minilm_entmax(corpus, TINY, seed=1, steps=1)
    assert all(torch.equal(model.weights[n], again.weights[n]) for n in model.weights)
    assert report2 == report
    with pytest.raises(AssertionError, match="trained again"):
        mle.load_minilm_entmax(corpus, TINY, seed=2, steps=1)


@pytest.mark.parametrize("options, match", [
    ({"length": 513}, "length must be a whole number in 2..512"), ({"length": 1}, "length"),
    ({"samples": 0}, "samples must be"), ({"steps": 0}, "steps must be"), ({"steps": 1.5}, "steps must be"),
    ({"threads": 0}, "threads >= 1"), ({"batch": 0}, "batch must be"), ({"bogus": 3}, "takes no option"),
])
def test_bad_options_are_one_line_errors_before_training(options, match, monkeypatch):
    monkeypatch.setattr(mle, "load_minilm_entmax", lambda *a, **k: pytest.fail("loaded the model"))
    with pytest.raises(DataError, match=match) as err:
        load_source("minilm-entmax", corpus="pydoc", **options)
    assert "\n" not in str(err.value)


def test_a_corpus_too_small_for_the_samples_fails_before_training(monkeypatch):
    monkeypatch.setattr(mle, "load_minilm_entmax", lambda *a, **k: pytest.fail("loaded the model"))
    small = Corpus(name="small", text="\n\n".join(f"paragraph {i} of words" for i in range(20)))
    with pytest.raises(DataError, match="held-out part"):
        mle.minilm_entmax_data(small, samples=5, length=16)


def test_the_source_is_registered():
    assert "minilm-entmax" in known_sources()


@pytest.mark.slow
def test_the_real_source_trains_once_then_inspects_from_the_cache(monkeypatch, capsys, isolated_cache):
    """The built-in source on the default corpus and recipe (a 2-step training instead of the README's
    minutes): ``sparsebench data inspect minilm-entmax`` prints the held-out cosine; the second call reads
    the model and the gold from the cache."""
    from bench.cli import main

    monkeypatch.setattr(mle, "DEFAULT_STEPS", 2)
    argv = ["data", "inspect", "minilm-entmax", "--samples", "3", "--length", "40"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "minilm-entmax: 3 samples x 6 layers x 12 heads" in out and "bidirectional" in out
    assert "gold computed in" in out and "held-out sentence embeddings (32 texts never trained on): cosine" in out
    assert len(list(isolated_cache.glob("minilm-entmax-*.safetensors"))) == 1
    monkeypatch.setattr(mle, "train_minilm_entmax", lambda *a, **k: pytest.fail("trained again"))
    assert main(argv + ["--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["gold_from_cache"] and result["descriptor"]["steps"] == 2
    assert len(result["per_head"]) == 6 and len(result["per_head"][0]) == 12
    assert 0.5 < result["descriptor"]["heldout_cosine"] <= 1
