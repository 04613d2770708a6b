"""``sparsebench capture``: a local ``transformers`` model's Q, K, V on a corpus, in the external format.

The model (see :mod:`bench.data.hf_model`: a directory, a GGUF file or a package carrying one, never a
download) runs with the capturing attention function of :mod:`bench.data.capture_attention`, so the
queries and keys are those its attention really scores (after rotary embeddings and per-head
normalisation), key/value heads stay ``Hk`` (grouped-query attention), and the causal flag and scale are
the model's. Samples are drawn from the corpus as for the built-in ``minilm`` source (seeded starts,
a target length between ``length // 2`` and ``length`` tokens per sample) and tokenised by the model's
own tokenizer; padding is at the end and zero.

A probe forward pass on two short samples first counts the attention layers and checks heads, scale,
causality and masks, so bad input fails before the long run. Memory is one batch of activations plus
the output (only the selected layers, in ``dtype``).

The built-in ``minilm`` source keeps its own forward pass (:mod:`bench.data.minilm`): ``transformers``'
BERT sums its embeddings in another order, so its Q and K differ from it in the last bits (about 2e-5).
"""

from __future__ import annotations

import inspect
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.data.capture_attention import NAME, Recorder, attach, install
from bench.errors import DataError
from predictors.data import AttentionData

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class Loaded:
    """A loaded model with its tokenizer and the recorder its attention runs through."""

    model: object
    tokenizer: object
    recorder: Recorder
    label: str
    device: str = "cpu"


def parse_layers(spec: str | None) -> list[int] | None:
    """``"0,2,5"`` -> ``[0, 2, 5]`` (sorted, unique); ``None`` or ``"all"``: every layer."""
    if spec is None or spec.strip() == "all":
        return None
    try:
        layers = sorted({int(x) for x in spec.split(",") if x.strip()})
    except ValueError:
        raise DataError(f"--layers {spec!r}: comma-separated layer indices expected, e.g. 0,2,5") from None
    if not layers or layers[0] < 0:
        raise DataError(f"--layers {spec!r}: layer indices are 0 or more")
    return layers


def _check_device(device: str) -> None:
    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise DataError(f"--device {device!r}: not a torch device (cpu, cuda, cuda:1...)") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise DataError(f"--device {device!r}: CUDA is not available here")


def load(model_ref: str, dtype=torch.float32, device: str = "cpu") -> Loaded:
    """Resolve and load ``model_ref`` offline with the capturing attention installed."""
    from bench.data.hf_model import enforce_offline

    enforce_offline()
    _check_device(device)
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise DataError("capture needs transformers: pip install 'sparsefinder-bench[capture]'") from None
    from bench.data.hf_model import load_model, load_tokenizer, resolve_model

    ref = resolve_model(model_ref)
    recorder = Recorder(dtype)
    install(recorder)
    model = load_model(ref, NAME, torch.float32, device)
    attach(recorder, model)
    return Loaded(model=model, tokenizer=load_tokenizer(ref), recorder=recorder, label=ref.label, device=device)


def pad_ids(ids_list: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists as ids ``[B, T]`` padded at the end with ``pad_id``, and lengths ``[B]``."""
    lengths = torch.tensor([len(x) for x in ids_list], dtype=torch.int64)
    ids = torch.full((len(ids_list), int(lengths.max())), pad_id, dtype=torch.long)
    for r, x in enumerate(ids_list):
        ids[r, : len(x)] = torch.as_tensor(x, dtype=torch.long)
    return ids, lengths


@torch.inference_mode()
def forward_calls(loaded: Loaded, ids_list: list[list[int]], keep, check="kept") -> tuple[list, torch.Tensor]:
    """One forward pass on a batch: the recorder's calls (layers in ``keep`` hold tensors, those in ``check``
    are checked; see :meth:`Recorder.start`) and lengths."""
    pad_id = getattr(loaded.tokenizer, "pad_token_id", None)
    ids, lengths = pad_ids(ids_list, 0 if pad_id is None else int(pad_id))
    mask = torch.arange(ids.shape[1])[None] < lengths[:, None]
    loaded.recorder.start(lengths, keep, check)
    # No cache: keys and values of this pass only (and no memory for a generation that never comes).
    extra = {"use_cache": False} if "use_cache" in inspect.signature(loaded.model.forward).parameters else {}
    try:
        loaded.model(input_ids=ids.to(loaded.device), attention_mask=mask.long().to(loaded.device), **extra)
    except DataError:
        raise
    except (IndexError, RuntimeError, TypeError, ValueError) as exc:
        # A model that cannot run on token ids alone (an encoder-decoder wanting decoder inputs, ids
        # beyond its vocabulary): bad input, one line.
        first = (str(exc).strip() or type(exc).__name__).splitlines()[0]
        raise DataError(f"model {loaded.label}: its forward pass on token ids failed: {first}") from None
    return loaded.recorder.calls, lengths


def probe(loaded: Loaded, ids_list: list[list[int]], layers: list[int] | None) -> list:
    """Check the model's attention on two short samples; the calls of the selected layers (no tensors).

    Raises
    ------
    DataError
        no attention calls, selected layers out of range, or selected layers that disagree on heads,
        head dimensions, scale or causality (one file holds one of each).
    """
    short = max(2, min(8, min(len(x) for x in ids_list[:2])))
    batch = [ids_list[0][:short], ids_list[min(1, len(ids_list) - 1)][: max(2, short - 2)]]
    calls, _ = forward_calls(loaded, batch, keep=set(), check=None if layers is None else set(layers))
    if not calls:
        raise DataError(f"model {loaded.label}: no attention calls through transformers' attention interface "
                        "(a model without attention layers, or one whose attention does not use the interface)")
    layers = list(range(len(calls))) if layers is None else layers
    bad = [x for x in layers if x >= len(calls)]
    if bad:
        raise DataError(f"--layers {bad}: out of range, model {loaded.label} has {len(calls)} attention layers "
                        f"(0-{len(calls) - 1})")
    chosen = [calls[x] for x in layers]
    for field in ("heads", "kv_heads", "head_dim", "value_dim", "scale", "causal"):
        values = sorted({getattr(c, field) for c in chosen})
        if len(values) > 1:
            raise DataError(f"the selected layers differ in {field} ({values}); one file holds one: "
                            "choose layers that agree with --layers")
    return chosen


def _allocate(s: int, n_layers: int, t: int, call, dtype) -> dict[str, torch.Tensor]:
    return {"q": torch.zeros(s, n_layers, call.heads, t, call.head_dim, dtype=dtype),
            "k": torch.zeros(s, n_layers, call.kv_heads, t, call.head_dim, dtype=dtype),
            "v": torch.zeros(s, n_layers, call.kv_heads, t, call.value_dim, dtype=dtype)}


def capture_ids(loaded: Loaded, ids_list: list[list[int]], layers: list[int] | None, batch: int = 8,
                show_progress: bool = False) -> tuple[dict[str, torch.Tensor], torch.Tensor, object, list[int]]:
    """Q, K, V of ``layers`` on token id sequences, batch by batch.

    Returns ``(tensors, lengths, call, layers)``: ``q`` ``[S, L, H, T, D]``, ``k`` ``[S, L, Hk, T, D]``,
    ``v`` ``[S, L, Hk, T, Dv]`` (``T``: the longest sequence; zero beyond each sample's length) in the
    recorder's dtype, ``lengths`` int64 ``[S]``, one selected layer's :class:`Call` (scale, causal) and
    the selected layer indices.
    """
    from tqdm.auto import tqdm

    if batch < 1:
        raise DataError(f"--batch must be at least 1, got {batch}")
    chosen = probe(loaded, ids_list, layers)
    layers = [c.layer for c in chosen]
    s, t = len(ids_list), max(len(x) for x in ids_list)
    out = _allocate(s, len(layers), t, chosen[0], loaded.recorder.dtype)
    all_lengths = []
    with tqdm(total=s, unit="sample", desc=f"capture {loaded.label}", file=sys.stderr,
              disable=not show_progress) as bar:
        for b0 in range(0, s, batch):
            calls, lengths = forward_calls(loaded, ids_list[b0 : b0 + batch], keep=set(layers))
            kept = [c for c in calls if c.q is not None]
            for r, n in enumerate(lengths.tolist()):
                for name in ("q", "k", "v"):
                    # Only valid positions are copied: padding stays zero, whatever the batch held.
                    out[name][b0 + r, :, :, :n] = torch.stack([getattr(c, name)[r, :, :n] for c in kept])
            all_lengths.append(lengths)
            bar.update(len(lengths))
    return out, torch.cat(all_lengths), chosen[0], layers


def sample_ids(tokenizer, corpus, samples: int, length: int, seed: int) -> list[list[int]]:
    """Token ids of ``samples`` corpus texts, drawn as the ``minilm`` source draws them: sample ``s``
    truncated at its target length (uniform in ``[length // 2, length]``, seeded)."""
    from bench.data.minilm import draw_texts, target_lengths

    # Words are ~1.3 tokens each in English prose: ask for enough words to reach the target.
    texts = draw_texts(corpus.documents(), samples, min_words=length, seed=seed)
    targets = target_lengths(samples, length, seed)
    return [list(tokenizer(text, truncation=True, max_length=target)["input_ids"])
            for text, target in zip(texts, targets)]


def _check_sizes(loaded: Loaded, samples: int, length: int) -> None:
    from bench.data.hf_model import max_positions

    if samples < 1:
        raise DataError(f"--samples must be at least 1, got {samples}")
    limit = max_positions(loaded.model.config)
    if length < 4 or (limit is not None and length > limit):
        raise DataError(f"--length must be in [4, {limit or 'the model maximum'}] tokens for model "
                        f"{loaded.label}, got {length}")


def capture_data(model: str, corpus=None, samples: int = 16, length: int = 256, layers: str | None = None,
                 dtype: str = "float32", seed: int = 0, batch: int = 8, device: str = "cpu",
                 show_progress: bool = False) -> AttentionData:
    """The :class:`AttentionData` of ``model`` (a reference for :func:`bench.data.hf_model.resolve_model`)
    on ``samples`` texts of ``corpus`` (a name, ``file:PATH``, a :class:`Corpus` or ``None``: the default)."""
    from bench.data.corpora import load_corpus

    if dtype not in DTYPES:
        raise DataError(f"--dtype {dtype!r}: one of {', '.join(DTYPES)}")
    selected = parse_layers(layers)
    corpus = corpus if corpus is not None and not isinstance(corpus, str) else load_corpus(corpus)
    loaded = load(model, DTYPES[dtype], device)
    _check_sizes(loaded, samples, length)
    ids_list = sample_ids(loaded.tokenizer, corpus, samples, length, seed)
    tensors, lengths, call, selected = capture_ids(loaded, ids_list, selected, batch, show_progress)
    import transformers

    descriptor = {"source": "capture", "model": loaded.label, "model_type": loaded.model.config.model_type,
                  "layers": ",".join(map(str, selected)), **corpus.descriptor, "samples": samples,
                  "length": length, "seed": seed, "dtype": dtype, "transformers": transformers.__version__}
    return AttentionData(q=tensors["q"], k=tensors["k"], v=tensors["v"], lengths=lengths, causal=call.causal,
                         scale=call.scale, alpha=1.5, name=loaded.label, descriptor=descriptor)


def capture_to_file(out: str | Path, **options) -> tuple[AttentionData, Path, float]:
    """:func:`capture_data` written to ``out`` in the external format (its descriptor as provenance
    metadata); returns the data, the path and the seconds it took."""
    from bench.data.external import write_external

    start = time.perf_counter()
    out = Path(out)
    if out.suffix != ".safetensors":
        raise DataError(f"output {out}: the external format is a .safetensors file")
    if not out.parent.is_dir():
        raise DataError(f"output {out}: folder {out.parent} does not exist")
    data = capture_data(**options)
    path = write_external(data, out, provenance={k: str(v) for k, v in data.descriptor.items()})
    return data, path, time.perf_counter() - start
