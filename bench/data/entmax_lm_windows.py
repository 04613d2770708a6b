"""Bytes of the ``entmax-lm`` corpus: the train / held-out split and the windows cut from them.

The corpus bytes are split by position before anything else (:func:`split_corpus`): the first ~95%
train the model, the last ~5% (starting at a paragraph boundary) are held out. The fixed held-out
evaluation windows (:func:`eval_windows`), the attention samples (:func:`sample_windows`) and the
downstream inputs all come from the held-out part, so they are measured on text the model never saw.
"""

from __future__ import annotations

import torch

from bench.data.corpora import Corpus
from bench.errors import DataError

HELDOUT_FRACTION = 0.05
MIN_SAMPLE_LEN = 32


def split_corpus(corpus: Corpus, heldout_fraction: float = HELDOUT_FRACTION) -> tuple[bytes, bytes]:
    """Split the corpus' UTF-8 bytes by position into ``(train, heldout)``.

    The held-out part is the last ``heldout_fraction`` of the bytes, moved forward to the next paragraph
    start (after a blank line) so it begins with a whole document; without a blank line after the cut,
    the cut stays where it is.
    """
    data = corpus.text.encode("utf-8")
    cut = int(len(data) * (1.0 - heldout_fraction))
    blank = data.find(b"\n\n", cut)
    if blank >= 0:
        cut = blank
        while cut < len(data) and data[cut : cut + 1] in (b"\n", b"\r", b" ", b"\t"):
            cut += 1
    return data[:cut], data[cut:]


def byte_tensor(data: bytes) -> torch.Tensor:
    """The byte values of ``data`` as int64 ``[len(data)]``."""
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).long()


def eval_windows(heldout: torch.Tensor, context: int) -> torch.Tensor:
    """Consecutive non-overlapping windows of ``context + 1`` bytes ``[N, context + 1]`` (the fixed
    held-out evaluation set; window ``n`` starts at byte ``n * context``)."""
    n = (heldout.numel() - 1) // context
    if n < 1:
        raise DataError(f"held-out part has {heldout.numel()} bytes; need more than the context {context}")
    return torch.stack([heldout[i * context : i * context + context + 1] for i in range(n)])




def windows_batch(windows: list[bytes]) -> tuple[torch.Tensor, torch.Tensor]:
    """Byte windows as one batch: ``x`` int64 ``[B, T]`` padded at the end with spaces (causal attention
    never lets padding reach a valid position) and their ``lengths`` ``[B]``."""
    lengths = torch.tensor([len(w) for w in windows], dtype=torch.long)
    x = torch.full((len(windows), int(lengths.max())), ord(" "), dtype=torch.long)
    for i, w in enumerate(windows):
        x[i, : len(w)] = byte_tensor(w)
    return x, lengths


def sample_windows(heldout: bytes, samples: int, length: int, seed: int) -> list[bytes]:
    """``samples`` non-overlapping windows of the held-out bytes, chosen by ``seed``.

    The held-out text is walked paragraph by paragraph (paragraphs end at a blank line): a window starts
    at a paragraph start and ends at the last paragraph end within ``length`` bytes, or, where that would
    leave fewer than ``MIN_SAMPLE_LEN`` bytes, is cut at ``length`` bytes. So windows hold whole
    documents where they can and their lengths vary between ``MIN_SAMPLE_LEN`` and ``length``. The next
    window starts at the first paragraph start after the previous window. A seeded permutation picks
    ``samples`` of these windows.
    """
    starts, ends, pos = [], [], 0
    while True:
        end = heldout.find(b"\n\n", pos)
        end = len(heldout) if end < 0 else end
        if end > pos:
            starts.append(pos)
            ends.append(end)
        nxt = end
        while nxt < len(heldout) and heldout[nxt : nxt + 1] in (b"\n", b"\r", b" ", b"\t"):
            nxt += 1
        if nxt >= len(heldout):
            break
        pos = nxt
    windows, i = [], 0
    while i < len(starts):
        s = starts[i]
        j = i
        while j + 1 < len(starts) and ends[j + 1] - s <= length:
            j += 1
        if MIN_SAMPLE_LEN <= ends[j] - s <= length:
            stop = ends[j]
        else:
            stop = min(s + length, len(heldout))
        if stop - s >= MIN_SAMPLE_LEN:
            windows.append(heldout[s:stop])
        i = j + 1
        while i < len(starts) and starts[i] < stop:
            i += 1
    if len(windows) < samples:
        raise DataError(f"held-out text has {len(windows)} windows of {MIN_SAMPLE_LEN}..{length} bytes; "
                        f"asked for {samples} samples (use a larger corpus or fewer samples)")
    order = torch.randperm(len(windows), generator=torch.Generator().manual_seed(seed))[:samples]
    return [windows[int(i)] for i in order]
