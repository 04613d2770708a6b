"""The external Q/K format: one safetensors file, so users can bring their own model.

Tensors
    ``q``        ``[S, L, H, T, D]``  float16, bfloat16 or float32
    ``k``        ``[S, L, Hk, T, D]`` same dtype; ``H % Hk == 0``, query head ``h`` reads key head
                 ``h // (H // Hk)``
    ``v``        optional, ``[S, L, Hk, T, Dv]``, same dtype
    ``lengths``  int64 ``[S]``, valid tokens per sample, padding at the end
String metadata
    ``causal``   ``"true"`` or ``"false"`` (required)
    ``scale``    float, default ``1/sqrt(D)``
    ``alpha``    float, default ``1.5``
    ``name``     free text, default the file name
    other keys   provenance (``sparsebench capture`` writes model, layers, corpus...), ignored on read

Writing keeps the tensors' dtype; reading returns them as stored, so a round trip is bit for bit.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import torch

from bench.errors import DataError
from predictors.data import AttentionData

ALLOWED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
FORMAT_KEYS = ("causal", "scale", "alpha", "name")


def write_external(data: AttentionData, path: str | Path, provenance: dict[str, str] | None = None) -> Path:
    """Write ``data`` in the external format (atomically); ``provenance``: extra string metadata that
    says what produced the file (the reader ignores it; it may not reuse a key of the format)."""
    from bench.data.cache import save_atomic

    clash = sorted(set(provenance or {}) & set(FORMAT_KEYS))
    if clash:
        raise ValueError(f"provenance keys {clash} are keys of the external format")

    tensors = {"q": data.q, "k": data.k, "lengths": data.lengths}
    if data.v is not None:
        tensors["v"] = data.v
    meta = {"causal": "true" if data.causal else "false", "scale": repr(float(data.scale)),
            "alpha": repr(float(data.alpha)), "name": data.name, **(provenance or {})}
    path = Path(path)
    save_atomic(path, tensors, meta)
    return path


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_external(path: str | Path) -> AttentionData:
    """Read and validate an external file; errors name the field and what was expected."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if path.is_dir():
        raise DataError(f"external file {path} is a folder; give a .safetensors file")
    if not path.is_file():
        raise DataError(f"external file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            names = set(f.keys())
            tensors = {n: f.get_tensor(n) for n in names}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise DataError(f"{path} is not a readable safetensors file: {exc}") from None
    for required in ("q", "k", "lengths"):
        if required not in names:
            raise DataError(f"{path}: tensor {required!r} is missing (expected q [S,L,H,T,D], "
                            "k [S,L,Hk,T,D], lengths int64 [S], optional v)")
    extra = sorted(names - {"q", "k", "v", "lengths"})
    if extra:
        raise DataError(f"{path}: unexpected tensors {extra}; the format has q, k, v, lengths")
    for name in ("q", "k", "v"):
        if name in tensors and tensors[name].dtype not in ALLOWED_DTYPES:
            raise DataError(f"{path}: tensor {name!r} has dtype {tensors[name].dtype}; "
                            "expected float16, bfloat16 or float32")
    if tensors["lengths"].dtype != torch.int64:
        raise DataError(f"{path}: tensor 'lengths' has dtype {tensors['lengths'].dtype}; expected int64")
    causal = meta.get("causal")
    if causal not in ("true", "false"):
        raise DataError(f"{path}: metadata 'causal' is {causal!r}; expected \"true\" or \"false\" (required)")
    q = tensors["q"]
    d = q.shape[-1] if q.ndim else 1
    scale = _float_meta(path, meta, "scale", 1.0 / math.sqrt(max(d, 1)))
    alpha = _float_meta(path, meta, "alpha", 1.5)
    return AttentionData(q=q, k=tensors["k"], v=tensors.get("v"), lengths=tensors["lengths"],
                         causal=causal == "true", scale=scale, alpha=alpha,
                         name=meta.get("name") or path.stem,
                         descriptor={"source": "file", "file": path.name, "file_sha256": _file_sha256(path)})


def _float_meta(path, meta, key, default):
    if key not in meta:
        return default
    try:
        value = float(meta[key])
    except ValueError:
        raise DataError(f"{path}: metadata {key!r} is {meta[key]!r}; expected a number") from None
    if not math.isfinite(value):
        raise DataError(f"{path}: metadata {key!r} is {meta[key]!r}; expected a finite number")
    return value
