"""Fingerprints of what produced a result: a descriptor's canonical key and a digest of tensor bytes."""

from __future__ import annotations

import hashlib
import json

import torch


def descriptor_key(descriptor: dict) -> str:
    """First 20 hex digits of SHA-256 over the canonical JSON of ``descriptor`` (sorted keys)."""
    text = json.dumps(descriptor, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of ``tensors``, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
