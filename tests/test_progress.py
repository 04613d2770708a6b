"""Console progress (bench/progress.py) and the benchmark suite's console (bench/suite_console.py): a
status line on terminals, one line per step in CI logs, visible under pytest's capture, and a closing
summary in place of pytest-benchmark's table."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench import progress
from bench.progress import Console, Step, clock, duration, in_ci, use_console

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def recorded():
    """Install a console that records what it is given; ``recorded(interactive)`` -> the list of writes."""
    out: list[str] = []

    def make(interactive: bool) -> list[str]:
        use_console(Console(write=out.append, interactive=interactive, width=80))
        return out

    yield make
    use_console(None)


def test_formats():
    assert clock(0) == "0:00" and clock(75.4) == "1:15" and clock(3725) == "1:02:05"
    assert duration(0.84) == "0.8 s" and duration(42.2) == "42 s" and duration(200) == "3 min 20 s"
    assert duration(3900) == "1 h 05 min"


@pytest.mark.parametrize("value, expected", [("", False), ("0", False), ("false", False), ("no", False),
                                             ("true", True), ("1", True), ("yes", True)])
def test_in_ci(monkeypatch, value, expected):
    monkeypatch.setenv("CI", value)
    assert in_ci() is expected


def test_quiet_step_writes_one_line_at_its_end(recorded):
    out = recorded(False)
    with Step("gold minilm", total=300, unit="rows") as step:
        for _ in range(3):
            step.update(100)
    assert out == [out[0]] and "\r" not in out[0]
    assert re.fullmatch(r"gold minilm: 300 rows in \d\.\d s\n", out[0])


def test_interactive_step_rewrites_one_line_then_leaves_one(recorded, monkeypatch):
    monkeypatch.setattr(progress, "REDRAW_SECONDS", 0.0)
    out = recorded(True)
    with Step("train entmax-lm", total=4, unit="steps") as step:
        for i in range(4):
            step.update(note=f"bpc {3 - i}.000")
    transient, final = out[:-1], out[-1]
    assert all(t.startswith("\r") and t.endswith("\x1b[K") and "\n" not in t for t in transient)
    assert "train entmax-lm 2/4 steps [ 50%]" in transient[2] and "left" in transient[2]
    assert final.startswith("\r\x1b[K") and re.search(r"train entmax-lm: 4 steps in \d\.\d s \(bpc 0\.000\)\n$",
                                                      final)


def test_a_short_step_leaves_no_line_and_a_disabled_one_nothing(recorded):
    out = recorded(False)
    with Step("fit window-w3", quiet_below=60):
        pass
    with Step("gold", total=3, enabled=False) as step:
        step.update(3)
    assert out == []


def test_a_failed_step_says_so(recorded):
    out = recorded(False)
    with pytest.raises(RuntimeError), Step("fit hashattn"):
        raise RuntimeError("boom")
    assert out and out[-1].startswith("fit hashattn: done stopped after")


def test_console_prefix_is_drawn_again_after_a_permanent_line(recorded):
    out = recorded(True)
    con = progress.console()
    con.prefix = "[ 3/10] predictors x"
    con.status("fit 0:01")
    con.line("data minilm ready")
    assert out == ["\r[ 3/10] predictors x · fit 0:01\x1b[K", "\r\x1b[Kdata minilm ready\n",
                   "\r[ 3/10] predictors x\x1b[K"]
    con.clear()
    assert out[-1] == "\r\x1b[K"


def test_default_console_is_quiet_off_a_terminal(capsys, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with Step("gold synthetic", total=2, unit="rows") as step:
        step.update(2)
    err = capsys.readouterr().err
    assert "\r" not in err and err.startswith("gold synthetic: 2 rows in ")


# -- the suite's console, in a benchmark session of its own ------------------------------------------------------
def _suite_command(tmp_path, *args, ci=True):
    env = {**os.environ, "SPARSEBENCH_REPORTS": str(tmp_path / "reports"), "PYTHONPATH": os.pathsep.join(
        [str(ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))}
    env["CI"] = "true" if ci else ""
    cmd = [sys.executable, "-m", "pytest", "-c", "bench/suite/pytest.ini", "bench/suite/bench_predictors.py",
           "bench/suite/bench_dense.py", "--profile", "smoke", "--dataset", "synthetic", "--backend", "torch",
           "--predictors", "window-w3,window-w11-g1", "--run", "console", *args]
    return cmd, env


def _suite(tmp_path, *args):
    cmd, env = _suite_command(tmp_path, *args)
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_suite_console_progress_and_closing_summary(tmp_path):
    out = _suite(tmp_path)
    assert "\r" not in out  # CI: no carriage-return bars
    assert "sparsebench: 5 configurations (2 predictors, 3 dense)" in out
    # Data preparation runs inside the first benchmark, under pytest's output capture, and is still seen.
    assert re.search(r"^data synthetic ready in .*: \d+ samples \(fit \d+, val \d+, eval \d+\), gold computed$",
                     out, flags=re.M)
    assert re.search(r"^gold synthetic \(eval samples\): \d+ rows in ", out, flags=re.M)
    lines = re.findall(r"^\[(\d)/5\] (\w+) (\S+): measured in .* \((\d+:\d\d) elapsed(, ~\d+:\d\d left)?\)$",
                       out, flags=re.M)
    assert [(n, phase) for n, phase, *_ in lines] == [("1", "predictors"), ("2", "predictors"), ("3", "dense"),
                                                      ("4", "dense"), ("5", "dense")]
    assert {lines[0][2], lines[1][2]} == {"synthetic-torch-window-w3", "synthetic-torch-window-w11-g1"}
    assert all(line[4] for line in lines) and lines[4][4] == ", ~0:00 left"
    assert re.search(r"^predictors: 2 configurations in .* \(2 measured\)$", out, flags=re.M)
    assert "Name (time in" not in out and "benchmark: 5 tests" not in out  # pytest-benchmark's table: hidden
    summary = out[out.index("sparsebench results"):]
    assert "configurations: 5 measured, 0 resumed (same fingerprint), 0 measured again; 0 failed, 0 skipped" \
        in summary
    for phase in ("data preparation", "predictors", "dense", "summary"):
        assert re.search(rf"^  {phase} +\S+ s$", summary, flags=re.M), phase
    assert re.search(r"benchmark-\d+T\d+\.json \(pytest-benchmark's timings", summary)
    assert re.search(r"^report: \S+/runs/console/report/report\.html \(tox -e bench renders it next; again: "
                     r"tox -e report -- \S+/runs/console\)$", summary, flags=re.M)
    assert re.search(r"\b5 passed\b", out)

    again = _suite(tmp_path, "--show-benchmark-table")
    assert "configurations: 0 measured, 5 resumed" in again
    assert re.search(r"^\[1/5\] predictors \S+: resumed in ", again, flags=re.M)
    assert re.search(r"\b5 resumed\b", again.splitlines()[-1]) and "skipped" not in again.splitlines()[-1]
    assert "gold read from the cache" in again


@pytest.mark.slow
def test_benchmark_table_comes_back_on_request(tmp_path):
    out = _suite(tmp_path, "--show-benchmark-table", "-k", "bench_dense")
    assert "Name (time in" in out


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_suite_console_on_a_terminal_rewrites_one_status_line(tmp_path):
    import pty

    cmd, env = _suite_command(tmp_path, ci=False)
    env["COLUMNS"] = "200"  # a new pseudo-terminal has no size: status lines would be cut at 80
    main_fd, child_fd = pty.openpty()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=child_fd, stderr=child_fd, close_fds=True)
    os.close(child_fd)
    chunks = []
    while True:
        try:
            data = os.read(main_fd, 1 << 16)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(main_fd)
    assert proc.wait() == 0
    out = re.sub(r"\x1b\[[0-9;]*m", "", b"".join(chunks).decode())  # colours off, line erasing kept
    running = re.findall(r"\r(\[\d/5\] (?:predictors|dense) [^\r\n\x1b]*)\x1b\[K", out)
    assert running and running[0].startswith("[1/5] predictors synthetic-torch-window-")
    assert any(": measured · " in r and " left" in r for r in running)
    assert re.search(r"\r\x1b\[Kdata synthetic ready in ", out)  # a permanent line in place of the status
    summary = out[out.index("sparsebench results"):]
    assert "\r" not in summary.replace("\r\n", "\n") and "configurations: 5 measured" in summary


def test_a_wide_status_cuts_the_prefix_before_the_step():
    from bench.progress import fit_line

    prefix = "[   5/1046] dense entmax-lm-entmax15-topk · 0:13 elapsed, ~35:17 left"
    step = "train entmax-lm 120/400 steps [ 30%] 1:02, ~2:24 left"
    line = fit_line(prefix, step, 79)
    assert len(line) == 79 and line.endswith(" · " + step)
    assert line.startswith("[   5/1046] dense") and "… · train" in line
    assert fit_line(prefix, step, 200) == prefix + " · " + step  # room for both: nothing cut
    assert fit_line(prefix, step, 60) == step  # too little left for a useful prefix: the step alone
    assert fit_line(prefix, step, 20) == step[:19] + "…"
    assert fit_line(prefix, "", 30) == prefix[:29] + "…"


def test_console_status_keeps_the_time_left_on_a_narrow_terminal():
    out: list[str] = []
    con = Console(write=out.append, interactive=True, width=80)
    con.prefix = "[  12/1046] predictors minilm-torch-sf-dist-r4-sp0.9 · 3:12 elapsed, ~41:20 left"
    con.status("gold minilm 40/128 samples [ 31%] 0:12, ~0:27 left")
    shown = out[-1].removeprefix("\r").removesuffix("\x1b[K")
    assert len(shown) <= 79 and shown.endswith("~0:27 left")


def test_the_session_names_and_hashes_its_corpus():
    from types import SimpleNamespace

    from bench.data.corpora import load_corpus
    from bench.suite_console import corpus_line

    def config(datasets, corpus=None):
        profile = SimpleNamespace(data=SimpleNamespace(corpus=corpus))
        return SimpleNamespace(sparsebench={"datasets": datasets, "profile": profile})

    bsd = load_corpus("fortunes-bsd")
    line = corpus_line(config(["minilm", "entmax-lm", "synthetic"]))
    assert line == (f"corpus fortunes-bsd (minilm, entmax-lm): {len(bsd.text):,} characters, sha256 {bsd.sha256}")
    assert corpus_line(config(["minilm"], "pydoc")).startswith("corpus pydoc (minilm): ")
    assert corpus_line(config(["synthetic", "file:x.safetensors"])) is None  # no text read
    assert corpus_line(config(["minilm"], "file:/no/such/corpus.txt")) is None  # preparing the data says why
