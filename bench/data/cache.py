"""Descriptor-keyed, atomically written, verified-on-read cache of tensors (safetensors files).

An entry is the safetensors file ``<root>/<kind>-<key>.safetensors`` where ``key`` is the first 20 hex
digits of SHA-256 over the canonical JSON of its descriptor (what produced it: source, corpus hash,
samples, length, seed, alpha, library versions...). The descriptor itself and a SHA-256 over the
tensor bytes are stored in the file's metadata and checked on read. A file that does not verify is
reported as :class:`CacheError`; :func:`load_or_build` then rebuilds it with a warning.

Writes go to a temporary file in the same folder and are renamed into place, so an interrupted run
never leaves a truncated entry.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from bench.data.atomic import write_atomic
from bench.errors import CacheError
from predictors.fingerprint import descriptor_key, tensor_digest  # noqa: F401  (part of the cache's API)

ENV_VAR = "SPARSEBENCH_CACHE"


def cache_root() -> Path:
    """``$SPARSEBENCH_CACHE``, else ``~/.cache/sparsefinder-bench``."""
    return Path(os.environ.get(ENV_VAR) or Path.home() / ".cache" / "sparsefinder-bench")


def versions() -> dict:
    """Versions of the libraries whose numerics the cached tensors depend on."""
    import entmax
    import safetensors

    return {"torch": torch.__version__, "entmax": getattr(entmax, "__version__", "1.3"),
            "safetensors": safetensors.__version__}


def entry_path(kind: str, descriptor: dict, root: Path | None = None) -> Path:
    return (root or cache_root()) / f"{kind}-{descriptor_key(descriptor)}.safetensors"


def save_atomic(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write a safetensors file via a temporary file and a rename (:func:`bench.data.atomic.write_atomic`)."""
    contiguous = {k: v.contiguous() for k, v in tensors.items()}
    write_atomic(path, lambda tmp: save_file(contiguous, str(tmp), metadata=metadata))


def save_entry(kind: str, descriptor: dict, tensors: dict[str, torch.Tensor], extra: dict | None = None,
               root: Path | None = None) -> Path:
    """Store ``tensors`` under ``descriptor``; ``extra`` is JSON-able information kept beside them."""
    path = entry_path(kind, descriptor, root)
    meta = {"descriptor": json.dumps(descriptor, sort_keys=True, default=str),
            "digest": tensor_digest(tensors), "extra": json.dumps(extra or {}, sort_keys=True, default=str)}
    save_atomic(path, tensors, meta)
    return path


def load_entry(kind: str, descriptor: dict, root: Path | None = None):
    """Return ``(tensors, extra)`` of a verified entry, ``None`` if absent; CacheError if corrupt."""
    path = entry_path(kind, descriptor, root)
    if not path.exists():
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CacheError(f"cache entry {path} is unreadable: {exc}") from None
    stored = json.loads(meta.get("descriptor", "null"))
    want = json.loads(json.dumps(descriptor, sort_keys=True, default=str))
    if stored != want:
        raise CacheError(f"cache entry {path} was written for another descriptor")
    if meta.get("digest") != tensor_digest(tensors):
        raise CacheError(f"cache entry {path} fails its checksum (corrupt or truncated)")
    return tensors, json.loads(meta.get("extra", "{}"))


def load_or_build(kind: str, descriptor: dict, build: Callable[[], tuple[dict, dict]],
                  root: Path | None = None, use_cache: bool = True):
    """Load a verified entry, or ``build()`` -> ``(tensors, extra)``, store it and return it.

    A corrupt entry is rebuilt with a warning naming the file.
    """
    if use_cache:
        try:
            hit = load_entry(kind, descriptor, root)
        except CacheError as exc:
            warnings.warn(f"{exc}; rebuilding it", stacklevel=2)
            hit = None
        if hit is not None:
            return hit
    tensors, extra = build()
    if use_cache:
        save_entry(kind, descriptor, tensors, extra, root)
    return tensors, extra
