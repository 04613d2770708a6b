import math

import pytest
import torch

from bench.data.minilm import load_minilm, minilm_data, model_dir, tokenize


@pytest.mark.slow
def test_captured_qk_reproduce_the_models_own_attention():
    transformers = pytest.importorskip("transformers")
    ref = transformers.BertModel.from_pretrained(str(model_dir()), attn_implementation="eager").eval()
    ids, mask = tokenize(["The quick brown fox jumps over the lazy dog, twice.", "A short one."], 64)
    with torch.no_grad():
        out = ref(input_ids=ids, attention_mask=mask.long(), output_attentions=True)
    _, cap = load_minilm().forward(ids, mask, capture=True)
    bias = torch.where(mask, 0.0, torch.finfo(torch.float32).min)[:, None, None, None, :]
    probs = (cap["q"] @ cap["k"].transpose(-1, -2) / math.sqrt(32) + bias).softmax(-1)
    theirs = torch.stack(out.attentions, 1)
    valid = mask[:, None, None, :, None]
    assert (probs - theirs).abs().masked_fill(~valid, 0).max() < 1e-5


def test_minilm_data_shape_and_determinism():
    a = minilm_data(corpus="pydoc", samples=3, length=40, seed=4)
    b = minilm_data(corpus="pydoc", samples=3, length=40, seed=4)
    assert a.q.shape[:3] == (3, 6, 12) and a.head_dim == 32 and not a.causal
    assert torch.equal(a.q, b.q) and torch.equal(a.lengths, b.lengths)
    assert int(a.lengths.min()) >= 20 and int(a.lengths.max()) <= 40
    assert a.descriptor["corpus"] == "pydoc" and len(a.descriptor["corpus_sha256"]) == 64


def test_sentence_embeddings_are_unit_vectors_and_meaningful():
    ids, mask = tokenize(["A cat sits on the mat.", "A kitten is sitting on a rug.", "Stock prices fell."], 32)
    e = load_minilm().embed(ids, mask)
    assert torch.allclose(e.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert e[0] @ e[1] > e[0] @ e[2] + 0.2
