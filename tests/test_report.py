"""bench.report: a report rendered end to end (papermill, nbconvert) from a tiny hand-made run folder,
opened in headless Chromium; and the small pieces (parameters cell, command line, Markdown)."""

import argparse
import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from bench.errors import BenchError
from bench.report import cli, outputs, render

TEMPLATE = Path(__file__).resolve().parent.parent / "notebooks" / "report.ipynb"
LAYERS, HEADS = 2, 3
# dataset -> configurations: (backend, name, family, params, sparsity, recall[, validation recall])
CONFIGS = {
    "tiny": [
        ("torch", "sf-kmeans-k8-top1", "sf-kmeans", {"k": 8, "top": 1}, 0.93, 0.62),
        ("faiss", "sf-kmeans-k8-top1", "sf-kmeans", {"k": 8, "top": 1}, 0.92, 0.70),
        ("torch", "sf-kmeans-k4-top2", "sf-kmeans", {"k": 4, "top": 2}, 0.70, 0.90),
        ("faiss", "sf-kmeans-k4-top2", "sf-kmeans", {"k": 4, "top": 2}, 0.71, 0.88),
        # validation prefers t2 to t3, eval the other way round: the report shows t2's eval numbers
        ("torch", "sf-dist-r4-t1", "sf-dist", {"r": 4, "t": 1}, 0.85, 0.60, 0.60),
        ("torch", "sf-dist-r4-t2", "sf-dist", {"r": 4, "t": 2}, 0.95, 0.30, 0.50),
        ("torch", "sf-dist-r4-t3", "sf-dist", {"r": 4, "t": 3}, 0.95, 0.45, 0.40),
        ("torch", "sf-kmeans-k8-top1-w3-g1", "sf-kmeans", {"k": 8, "top": 1, "w": 3, "g": 1}, 0.85, 0.80),
        ("torch", "sf-kmeans-k16-top1-w3-g1", "sf-kmeans", {"k": 16, "top": 1, "w": 3, "g": 1}, 0.95, 0.60),
        ("torch", "window-w3", "window", {"w": 3, "g": 0}, 0.96, 0.20),
        ("torch", "window-w3-g1", "window", {"w": 3, "g": 1}, 0.95, 0.45),
        ("torch", "window-w11-g1", "window", {"w": 11, "g": 1}, 0.85, 0.60),
        ("torch", "reformer-raw-b4-h2", "reformer", {"space": "raw", "b": 4, "h": 2}, 0.75, 0.55),
        ("torch", "reformer-raw-b8-h2", "reformer", {"space": "raw", "b": 8, "h": 2}, 0.85, 0.35),
    ],
    # written before records carried validation and per-sample scores, variants and kinds
    "tiny2": [
        ("torch", "sf-kmeans-k8-top1", "sf-kmeans", {"k": 8, "top": 1}, 0.90, 0.50),
        ("torch", "window-w3-g1", "window", {"w": 3, "g": 1}, 0.95, 0.55),
        ("torch", "window-w3", "window", {"w": 3, "g": 0}, 0.96, 0.25),
    ],
}
GOLD = [[0.9, 0.7, 0.95], [0.85, 0.97, 0.8]]  # gold sparsity per layer and head (dataset tiny)
OFFSETS = [-0.02, 0.01, 0.02, -0.01]  # per-sample recall around the mean (tiny has 4 eval samples)
KINDS = {"sf-kmeans": "learned", "sf-dist": "learned", "window": "fixed", "reformer": "hashing"}


def new_fields(family: str, params: dict, sp: float, rec: float, val_rec: float, err: float) -> dict:
    """What records carry since selection on validation: kind, variant, seed, split, per-sample eval
    values and validation means."""
    mean = {"recall": rec, "sparsity": sp, "mass": rec + 0.1, "precision": 0.3, "exact": rec / 2,
            "output_error": None if math.isnan(err) else err}
    per = {m: [None if v is None else v + (o if m in ("recall", "mass") else 0.0) for o in OFFSETS]
           for m, v in mean.items()}
    helped = params.get("w", 0) >= 3 and params.get("g", 0) >= 1
    return {"kind": KINDS[family], "variant": "helped" if helped else "bare", "seed": 0, "split": [0.5, 0.25, 0.25],
            "per_sample": per, "val": {"mean": {**mean, "recall": val_rec, "mass": val_rec + 0.1},
                                       "per_sample": {}, "samples": 4}}


def write_tiny_run(run: Path) -> None:
    """A run folder as bench.results.summary writes it: summary.json and results.csv, numbers only."""
    run.mkdir(parents=True)
    predictors, rows = [], []
    for ds, items in CONFIGS.items():
        for backend, name, family, params, sp, rec, *val in items:
            err = math.nan if family == "reformer" else (1 - rec) * 0.5  # one NaN output_error
            predictors.append({
                "dataset": ds, "backend": backend, "name": name, "family": family, "params": params,
                "mean": {"recall": rec, "sparsity": sp, "precision": 0.3, "exact": rec / 2, "mass": rec + 0.1,
                         "output_error": None if math.isnan(err) else err},
                "time": {"mean": 0.002, "median": 0.002, "min": 0.001, "stddev": 0.0, "rounds": 2},
                "fit_seconds": 0.1, "prediction_flops": 1e5, "attention_flops": (1 - sp) * 4e7, "dense_flops": 4e7,
                "gold_sparsity": 0.87, "ratio_to_dense": {"entmax15-topk": 0.5},
                "dataset_descriptor": {"source": ds, "corpus": "fortunes", "corpus_sha256": "c0ffee" * 10 + "abcd",
                                       "samples": 4, "length": 64},
                **(new_fields(family, params, sp, rec, val[0] if val else rec, err) if ds == "tiny" else {}),
            })
            for layer in range(LAYERS):
                for head in range(HEADS):
                    r = min(1.0, max(0.0, rec + 0.1 * (head - 1) - 0.05 * layer))
                    g = GOLD[layer][head]
                    rows.append({"dataset": ds, "backend": backend, "name": name, "family": family,
                                 "layer": layer, "head": head, **{f"param_{k}": v for k, v in params.items()},
                                 "recall": r, "sparsity": sp, "precision": min(1.0, (1 - g) * r / (1 - sp)),
                                 "exact": r / 2, "mass": min(1.0, r + 0.1), "output_error": err,
                                 # tiny2 has no recorded gold sparsity: the report estimates it
                                 "gold_sparsity": g if ds == "tiny" else math.nan,
                                 "predict_seconds_mean": 0.002, "fit_seconds": 0.1})
    dense_t = {128: 0.001, 256: 0.004, 512: 0.016}
    scaling = [{"kind": "scaling", "n": n, "backend": "dense", "method": "entmax15-topk", "device": "cpu",
                "heads": 12, "head_dim": 32, "flops": 1.0, "time": {"mean": t, "min": t}} for n, t in dense_t.items()]
    scaling += [{"kind": "scaling", "n": n, "backend": "dense", "method": "softmax-sdpa", "device": "cpu",
                 "time": {"mean": t / 10, "min": t / 10}} for n, t in dense_t.items()]
    kmeans_t = {128: 0.002, 256: 0.003, 512: 0.004}  # cheaper than entmax15-topk from n = 256
    scaling += [{"kind": "scaling", "n": n, "backend": "torch", "method": "sf-kmeans-k8-top1", "device": "cpu",
                 "time": {"mean": t, "min": t}} for n, t in kmeans_t.items()]
    scaling += [{"kind": "scaling", "n": n, "backend": "faiss", "method": "sf-kmeans-k8-top1", "device": "cpu",
                 "time": {"mean": 0.0005, "min": 0.0005}} for n in dense_t]
    # a window predicts by formula: its "time" is the call overhead
    scaling += [{"kind": "scaling", "n": n, "backend": "torch", "method": "window-w11-g1", "device": "cpu",
                 "time": {"mean": 1e-8, "min": 1e-8}} for n in dense_t]
    summary = {"environment": {"python": "3.11.7", "torch": "2.13.0+cpu", "faiss": "1.15.1", "cpu_cores": 2},
               "predictors": predictors,
               "dense": [{"kind": "dense", "dataset": "tiny", "method": "entmax15-topk", "device": "cpu",
                          "time": {"mean": 0.004}}],
               "scaling": scaling}
    (run / "summary.json").write_text(json.dumps(summary, indent=1))
    pd.DataFrame(rows).to_csv(run / "results.csv", index=False)


def write_tiny_gpu_run(run: Path) -> None:
    """A GPU run's summary.json: AdaSplash against one predictor's sparse execution, which beats it from n = 4096
    (4 ms against 5 ms there, 2x faster at n = 8192)."""
    def rec(n, backend, method, dtype, t):
        return {"kind": "gpu", "n": n, "backend": backend, "method": method, "dtype": dtype, "device": "cuda",
                "device_name": "NVIDIA H200", "time": {"mean": t, "min": t}, "sparsity": 0.9}
    ada = {1024: 1e-3, 4096: 5e-3, 8192: 2e-2}
    sparse = {1024: 2e-3, 4096: 4e-3, 8192: 1e-2}
    gpu = [rec(n, "dense", "adasplash", "float16", t) for n, t in ada.items()]
    gpu += [rec(n, "sparse", "sf-kmeans-r4-k8-top1", "float32", t) for n, t in sparse.items()]
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"environment": {}, "gpu": gpu, "gpu_twins": []}))


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """The tiny run rendered once (about 10-30 s: a Jupyter kernel starts and draws every figure), with a GPU
    run beside it for the GPU section."""
    base = tmp_path_factory.mktemp("report")
    run = base / "runs" / "tiny-run"
    write_tiny_run(run)
    write_tiny_gpu_run(base / "gpu")
    paths = render.render(run, notebooks=[TEMPLATE], parameters={"gpu_run_dir": str(base / "gpu")})
    return run, run / "report", paths


@pytest.mark.slow
def test_report_has_the_gpu_section(rendered):
    _, out, _ = rendered
    readme = (out / "README.md").read_text()
    sentence = ("- sf-kmeans-r4-k8-top1: predicted sparse execution (prediction included) beats AdaSplash from "
                "n = 4096 (2x faster than AdaSplash at n = 8192; sparsity 0.900 at n = 8192).")
    assert sentence in readme and readme.index(sentence) < readme.index("## Run and environment")  # a key finding
    assert "## On the GPU" in readme and "on NVIDIA H200: 6 attention records" in readme
    assert (out / "figures" / "gpu-times.png").is_file() and (out / "tables" / "gpu-crossover-adasplash.csv").is_file()


@pytest.mark.slow
def test_render_writes_every_output(rendered):
    run, out, paths = rendered
    names = {p.relative_to(out).as_posix() for p in paths}
    assert {"report.ipynb", "report.html", "README.md"} <= names
    for ds, variants in (("tiny", ("bare", "helped")), ("tiny2", ("bare",))):
        for variant in variants:
            for fig in ("fronts-recall", "fronts-recall-full", "fronts-mass", "fronts-output_error"):
                assert f"figures/{fig}--{ds}--{variant}.png" in names
        for fig in (f"heads-gold-sparsity--{ds}", f"heads-recall--{ds}", f"flops-recall--{ds}"):
            assert f"figures/{fig}.png" in names
    assert "figures/fronts-recall--tiny2--helped.png" not in names  # tiny2 has no helped family
    assert "figures/scaling.png" in names
    assert {"tables/front-readings.csv", "tables/paper-claim.csv", "tables/crossover-entmax15-topk.csv",
            "tables/grid-gaps.csv"} <= names
    for p in paths:
        assert p.is_file() and p.stat().st_size > 0, p
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The executed notebook ran clean: no errors, nothing on stderr (warnings would show in the HTML).
    nb = nbformat.read(out / "report.ipynb", as_version=4)
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            assert o["output_type"] != "error", o
            assert not (o["output_type"] == "stream" and o["name"] == "stderr"), o["text"]


@pytest.mark.slow
def test_report_answers_the_questions(rendered):
    _, out, _ = rendered
    readme = (out / "README.md").read_text()
    html = (out / "report.html").read_text()
    # The paper's claim, per dataset, variant and level: sf-kmeans' front reads 0.803 at 0.8 (between
    # (0.71, 0.88) and (0.92, 0.70)), reformer's 0.450; no baseline reaches 0.9.
    claim = re.search(r"\| tiny \| bare \| 0.8 \| sf-kmeans 0.803 \[[0-9.]+, [0-9.]+\] \| reformer 0.450 "
                      r"\[[0-9.]+, [0-9.]+\] \| holds \|", readme)
    assert claim, readme[:4000]
    assert "| tiny | bare | 0.9 | sf-kmeans 0.717 [" in readme
    assert "| – (no front reaches it) | not measured |" in readme
    assert "| tiny2 | bare | 0.9 | sf-kmeans 0.500 | – (no front reaches it) | not measured: no per-sample scores |" \
        in readme
    # Selection on validation: sf-dist's front is t1 and t2 (t3 is better on eval only), read at 0.9: 0.450.
    assert "| sf-dist | – | 0.450 [" in readme and "| 2 of 3 on validation |" in readme
    fronts = pd.read_csv(out / "tables" / "front-readings.csv")
    row = fronts[(fronts["dataset"] == "tiny") & (fronts["series"] == "sf-dist") & (fronts["variant"] == "bare")
                 & (fronts["metric"] == "recall") & (fronts["statistic"] == "at 0.9")].iloc[0]
    assert row["estimate"] == pytest.approx(0.45) and row["lo"] < 0.45 < row["hi"]
    assert row["front"] == "sf-dist-r4-t1; sf-dist-r4-t2" and row["selected_on"] == "validation"
    assert set(fronts["metric"]) == {"recall", "mass"}
    # Bare and helped tables say which they are; the baseline is in both.
    assert "**tiny, bare: each predictor alone.**" in readme
    assert "**tiny, helped: with the paper's helper, a window of w >= 3 and the first token.**" in readme
    assert readme.count("| window+sink (baseline) |") >= 4
    # The old-format dataset says what it lacks.
    for note in ("- tiny2: selected on eval: this run has no validation scores (every series).",
                 "- tiny2: no intervals: this run has no per-sample scores (estimates only).",
                 "- variant inferred from the parameters (helped: w >= 3 and g >= 1): this run records no variant "
                 "(3 of 17 records)."):
        assert note in readme
    assert "tiny: selected on eval" not in readme
    # Hardest heads: head 0 of layer 1 has the lowest recall of the chosen configuration.
    assert "tiny: the hardest heads for sf-kmeans-k8-top1 (faiss) are L1H0" in readme
    # From which n each predictor is cheaper than dense entmax15-topk: one table, integers as integers,
    # the window (a formula) apart and never "faster".
    assert "| sf-kmeans | sf-kmeans-k8-top1 | torch | 256 | 4x faster at n = 512 |" in readme
    assert "| sf-kmeans | sf-kmeans-k8-top1 | faiss | 128 (every measured n) | 32x faster at n = 512 |" in readme
    assert "Listed apart, window-w11-g1 (torch): prediction is a formula: no measurable cost" in readme
    assert "| window-w11-g1 |" not in readme and not re.search(r"\b(128|256|512)\.0\b", readme)
    crosscsv = (out / "tables" / "crossover-entmax15-topk.csv").read_text()
    assert "256.0" not in crosscsv and ",256," in crosscsv
    # Findings first, then the environment (with the corpus hash); every figure has its caption.
    assert readme.index("## Key findings") < readme.index("## Run and environment") < readme.index("## Figures")
    assert readme.index("## Run and environment") < readme.index("## Grid density") < readme.index("## Figures")
    assert html.index("Key findings") < html.index("Run and environment")
    assert "c0ffee" * 10 + "abcd" in html and "c0ffee" * 10 + "abcd" in readme
    manifest = json.loads((out / "report.manifest.json").read_text())
    for fig in manifest["figures"]:
        assert fig["caption"] and f"*{fig['caption']}*" in readme, fig
    assert "*tiny, bare: each predictor alone: recall against sparsity, zoomed on sparsity 0.8-1.0." in readme
    # Every figure of the README exists; the HTML loads nothing from the network and shows no code.
    for link in re.findall(r"\]\((figures/[^)]+)\)", readme):
        assert (out / link).is_file()
    assert not re.search(r'<script[^>]+src="https?:', html)
    assert "import pareto" not in html and "load_run(" not in html


@pytest.mark.slow
def test_rerender_replaces_stale_figures(rendered, tmp_path):
    _, out, _ = rendered
    copy = tmp_path / "report"
    shutil.copytree(out, copy)
    (copy / "figures" / "mine.png").write_bytes(b"not ours")
    render._clean_previous(copy)  # what render does before executing again
    # What the last render listed is gone, anything else stays.
    assert not (copy / "figures" / "fronts-recall--tiny--bare.png").exists()
    assert not (copy / "tables" / "front-readings.csv").exists()
    assert not (copy / "report.manifest.json").exists()
    assert (copy / "figures" / "mine.png").is_file() and (copy / "report.html").is_file()


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None and Path("/usr/bin/chromium").is_file():
        exe = "/usr/bin/chromium"
    if exe is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium): cannot open the HTML")
    return exe


@pytest.mark.slow
def test_html_opens_in_headless_chromium(rendered, tmp_path):
    exe = chromium()
    _, out, paths = rendered
    html = out / "report.html"
    figures = [p for p in paths if p.suffix == ".png"]
    dom = subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile-dom'}", "--dump-dom",
                          html.as_uri()], capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    imgs = re.findall(r'<img[^>]+src="data:image/png;base64,([A-Za-z0-9+/=]{100,})"', dom.stdout)
    assert len(imgs) == len(figures)
    assert "Key findings" in dom.stdout
    # figures carry their titles as alt text
    assert 'alt="tiny, bare: recall against sparsity (sparsity 0.8-1.0)"' in dom.stdout
    shot = tmp_path / "shot.png"
    res = subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile-shot'}",
                          "--window-size=1280,2400", f"--screenshot={shot}", html.as_uri()],
                         capture_output=True, text=True, timeout=180)
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (2400, 1280) and pixels.std() > 0.01  # something was drawn


# ---------------------------------------------------------------- small pieces, no kernel


def test_template_parameters_cell_is_literal_only():
    params = render.notebook_parameters(TEMPLATE)
    assert {"run_dir", "dataset", "x_metric", "y_metric", "levels", "level", "predictor", "reference",
            "out_dir", "manifest", "window", "n_boot", "boot_seed"} <= set(params)
    assert params["x_metric"] == "sparsity" and params["y_metric"] == "recall"
    assert params["levels"] == [0.8, 0.9, 0.95] and params["window"] == [0.8, 0.99]


def test_parameters_cell_rules(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("a = 1\nb = f(2)", metadata={"tags": ["parameters"]})]
    nbformat.write(nb, tmp_path / "bad.ipynb")
    with pytest.raises(BenchError, match="b is not a literal"):
        render.notebook_parameters(tmp_path / "bad.ipynb")
    nb.cells = [nbformat.v4.new_code_cell("a = 1")]
    nbformat.write(nb, tmp_path / "none.ipynb")
    with pytest.raises(BenchError, match="exactly one cell tagged 'parameters'"):
        render.notebook_parameters(tmp_path / "none.ipynb")


def test_render_rejects_bad_input_before_starting_a_kernel(tmp_path):
    with pytest.raises(BenchError, match="no summary.json"):
        render.render(tmp_path)
    run = tmp_path / "run"
    write_tiny_run(run)
    with pytest.raises(BenchError, match="has no parameter colour"):
        render.render(run, notebooks=[TEMPLATE], parameters={"colour": "red"})
    with pytest.raises(BenchError, match="no dataset 'nope'; it has: tiny, tiny2"):
        render.render(run, notebooks=[TEMPLATE], parameters={"dataset": "nope"})
    with pytest.raises(BenchError, match="unknown metric 'speed'"):
        render.render(run, notebooks=[TEMPLATE], parameters={"y_metric": "speed"})
    with pytest.raises(BenchError, match="x must be sparsity, not flops_ratio"):
        render.render(run, notebooks=[TEMPLATE], parameters={"x_metric": "flops_ratio"})
    with pytest.raises(BenchError, match="higher-better per-sample metric .*, not output_error"):
        render.render(run, notebooks=[TEMPLATE], parameters={"y_metric": "output_error"})
    with pytest.raises(BenchError, match="template nope.ipynb not found"):
        render.render(run, notebooks=["nope"])
    with pytest.raises(BenchError, match="run_dir are set by render itself"):
        render.render(run, notebooks=[TEMPLATE], parameters={"run_dir": "elsewhere"})
    assert not (run / "report").exists()  # nothing written on bad input


def test_command_line_errors_are_one_line(tmp_path, capsys):
    assert cli.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sparsebench: error: ") and err.count("\n") == 1


def test_run_from_bench_args(monkeypatch, tmp_path):
    monkeypatch.setenv("SPARSEBENCH_REPORTS", str(tmp_path))
    assert cli.run_from_bench_args([]) == tmp_path / "runs" / "default"
    # File datasets have their own run folder, as the suite names it (bench/suite/conftest.py _default_run).
    assert cli.run_from_bench_args(["--profile", "smoke", "--dataset", "file:x"]) == tmp_path / "runs" / "file-x"
    assert cli.run_from_bench_args(["--dataset=minilm,file:/d/my.safetensors"]) == tmp_path / "runs" / "file-my"
    assert cli.run_from_bench_args(["--profile", "smoke", "--dataset", "minilm"]) == tmp_path / "runs" / "smoke"
    assert cli.run_from_bench_args(["--dataset=file:/d/my data.safetensors,minilm"]) == \
        tmp_path / "runs" / "file-my_data"
    assert cli.run_from_bench_args(["--profile=smoke", "--run=mine"]) == tmp_path / "runs" / "mine"
    args = argparse.ArgumentParser()
    cli.add_arguments(args)
    parsed = args.parse_args(["--bench-args", "--profile", "smoke", "-k", "window"])
    assert parsed.bench_args == ["--profile", "smoke", "-k", "window"] and parsed.run is None
    parsed = args.parse_args(["--bench-args"])
    assert parsed.bench_args == []


def test_add_report_parser_hooks_into_a_cli():
    parser = argparse.ArgumentParser(prog="sparsebench")
    sub = parser.add_subparsers(dest="command", required=True)
    cli.add_report_parser(sub)
    args = parser.parse_args(["report", "reports/runs/smoke", "--out", "x", "--y", "mass"])
    assert args.func is cli.cmd_report and args.out == "x" and args.y_metric == "mass"


def test_markdown_table():
    df = pd.DataFrame({"a|b": ["x|y", None], "v": [0.12345, math.nan], "n": [3, 4]})
    assert outputs.markdown_table(df) == ("| a\\|b | v | n |\n|---|---|---|\n| x\\|y | 0.123 | 3 |\n| – | – | 4 |")


def test_file_id():
    assert outputs.file_id("file:/data/my run.safetensors") == "file-my_run"
    assert outputs.file_id("minilm") == "minilm"


@pytest.mark.parametrize("count", [1, 9, 10, 18, 25])
def test_series_colours_are_distinct_and_never_grey(count):
    from bench.report.figures import colours

    cs = [tuple(round(x, 6) for x in c) for c in colours(count)]
    assert len(cs) == count == len(set(cs))
    assert not any(abs(r - g) < 1e-6 and abs(g - b) < 1e-6 for r, g, b in cs)  # greys are for references


def test_shown_path_is_relative_inside_the_current_folder(tmp_path, monkeypatch):
    from bench.report.outputs import shown_path

    monkeypatch.chdir(tmp_path)
    (tmp_path / "reports" / "reference").mkdir(parents=True)
    assert shown_path(tmp_path / "reports" / "reference") == "reports/reference"
    assert shown_path("reports/reference") == "reports/reference"
    assert shown_path("/somewhere/else") == "/somewhere/else"


def _kernel_running(monkeypatch, exe: str, interpreter: str) -> None:
    """Make kernel ``python3`` run ``exe`` while this interpreter is ``interpreter``."""
    from types import SimpleNamespace

    from jupyter_client.kernelspec import KernelSpecManager

    spec = SimpleNamespace(argv=[exe, "-m", "ipykernel_launcher"], resource_dir="/kernels/python3")
    monkeypatch.setattr(KernelSpecManager, "get_kernel_spec", lambda self, name: spec)
    monkeypatch.setattr(render.sys, "executable", interpreter)


def test_check_kernel_follows_links_to_one_binary(tmp_path, monkeypatch):
    # A venv's bin/python and bin/python3 are two links to one binary: the same interpreter.
    binary = tmp_path / "base" / "python3.11"
    binary.parent.mkdir()
    binary.write_text("")
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text(f"home = {binary.parent}\n")
    (venv / "bin" / "python").symlink_to(binary)
    (venv / "bin" / "python3").symlink_to("python")
    _kernel_running(monkeypatch, str(venv / "bin" / "python3"), str(venv / "bin" / "python"))
    render.check_kernel()
    assert render.same_interpreter(str(venv / "bin" / "python3"), str(venv / "bin" / "python"))
    # Another venv links to that binary too, but runs other packages: not this interpreter.
    other = tmp_path / "other"
    (other / "bin").mkdir(parents=True)
    (other / "pyvenv.cfg").write_text(f"home = {binary.parent}\n")
    (other / "bin" / "python3").symlink_to(binary)
    _kernel_running(monkeypatch, str(other / "bin" / "python3"), str(venv / "bin" / "python"))
    with pytest.raises(BenchError, match="runs .*other/bin/python3, not this interpreter"):
        render.check_kernel()
    # A different binary is not this interpreter either.
    elsewhere = tmp_path / "elsewhere" / "python3"
    elsewhere.parent.mkdir()
    elsewhere.write_text("")
    _kernel_running(monkeypatch, str(elsewhere), str(venv / "bin" / "python"))
    with pytest.raises(BenchError, match="not this interpreter"):
        render.check_kernel()
