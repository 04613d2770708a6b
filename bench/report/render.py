"""Trade-off reports of a finished run: notebooks executed with papermill, HTML without code, PNG figures.

    python -m bench.report RUN_DIR [--out DIR] [--dataset D] [--x sparsity] [--y recall] [--predictor NAME]
    python -m bench.report --bench-args [ARGS...]    the run that ``pytest -c bench/suite/pytest.ini bench/suite ARGS``
                                                      wrote (``tox -e bench`` ends with this)

Each template of ``notebooks/`` (one cell tagged ``parameters``, literal values only) is executed with
papermill into the output folder (default ``RUN_DIR/report/``)::

    report/report.ipynb   the executed notebook (code and outputs)
    report/report.html    standalone HTML, code hidden, figures embedded (opens offline in a browser)
    report/figures/*.png  every figure, as files (for a code-hosting site, linked from README.md)
    report/tables/*.csv   the numbers behind the tables (numbers only, NaN where undefined)
    report/README.md      the key findings, the matched-sparsity table and every figure, in Markdown
    report/report.manifest.json   what the notebook wrote (a later render removes exactly that first)

The notebooks only read ``summary.json`` and ``results.csv``; every number they show comes from
:mod:`bench.report.pareto`; the figures are drawn by the ``plot_*`` functions here.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import math
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench.errors import BenchError
from bench.evaluation.metric_table import axis_label

# Templates live in the source tree's notebooks/ (beside the package in a checkout; an installed wheel
# does not carry them, so the current folder's notebooks/ is searched too: tox runs from the project root).
# bench/report/render.py -> the folder holding the bench package (the checkout in a source tree).
PACKAGE_PARENT = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = PACKAGE_PARENT / "notebooks"
NOTEBOOKS = ("report",)
# Named explicitly: with ipykernel installed, "python3" runs the interpreter that runs papermill
# (jupyter_client swaps a bare "python" in the kernel command for sys.executable), so a tox
# environment executes the notebooks with its own packages.
KERNEL = "python3"
BASELINE_COLOUR = "black"
BACKEND_STYLE = {"torch": {"linestyle": "-", "marker": "o"}, "faiss": {"linestyle": "--", "marker": "X"}}


# ---------------------------------------------------------------- figures


CEILING_COLOURS = ("dimgray", "darkgray", "silver")


def colours(count: int) -> list:
    """``count`` distinct colours without greys (greys mean dense references and ceilings here)."""
    import seaborn as sns

    if count <= 9:
        return [c for i, c in enumerate(sns.color_palette("tab10", 10)) if i != 7][:count]  # 7: grey
    base = [c for i, c in enumerate(sns.color_palette("tab20", 20)) if i not in (14, 15)]  # tab20's greys
    return (base + sns.color_palette("husl", max(0, count - len(base))))[:count]


def palette(series: Sequence[str]) -> dict:
    """A fixed colour per series, the same in every figure: the window+sink baseline black, the ceilings
    (:func:`bench.report.pareto.is_ceiling`) in greys, every other series from a qualitative palette."""

    from bench.report.pareto import is_ceiling

    ceilings = sorted({s for s in series if is_ceiling(s)})
    names = sorted({s for s in series if s != "window+sink" and not is_ceiling(s)})
    out = dict(zip(names, colours(len(names))))
    out.update({c: CEILING_COLOURS[i % len(CEILING_COLOURS)] for i, c in enumerate(ceilings)})
    out["window+sink"] = BASELINE_COLOUR
    return out


def _style(backend: str) -> dict:
    return BACKEND_STYLE.get(backend, {"linestyle": ":", "marker": "s"})


def shown_path(path) -> str:
    """``path`` as a report shows it: relative to the current folder when inside it (the same text on
    every machine for a run under the project, e.g. ``reports/reference``), else as given."""
    p = Path(path).resolve()
    try:
        return p.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path)


def series_caption(series: str) -> str:
    """Legend and table label: the baseline and the ceilings say what they are."""
    from bench.report.pareto import is_ceiling

    if series == "window+sink":
        return series + " (baseline)"
    return series + (" (ceiling, not cheap)" if is_ceiling(series) else "")


def _legend(ax, colours: dict, series: Sequence[str], backends: Sequence[str]) -> None:
    from matplotlib.lines import Line2D

    from bench.report.pareto import is_ceiling

    handles = [Line2D([], [], color=colours[s], lw=2.5 if s == "window+sink" else 1.8,
                      ls=":" if is_ceiling(s) else "-", label=series_caption(s)) for s in sorted(set(series))]
    if len(set(backends)) > 1 or set(backends) - {"torch"}:
        handles += [Line2D([], [], color="grey", label=f"backend {b}", **_style(b)) for b in sorted(set(backends))]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9)


def plot_tradeoff(configs, x: str, y: str, colours: dict, title: str = "", levels: Sequence[float] = ()):
    """Every configuration of ``configs`` (one dataset) as a faint point, and each series' Pareto front
    (:func:`bench.report.pareto.fronts`) as a line: colour = series, line style and marker = backend."""
    import matplotlib.pyplot as plt

    from bench.report import pareto

    fig, ax = plt.subplots(figsize=(8.5, 5.0))
    front = pareto.fronts(configs, x, y, by=("series", "backend"))
    for (series, backend), g in configs.groupby(["series", "backend"], sort=True):
        st = dict(_style(backend), **({"linestyle": ":"} if pareto.is_ceiling(series) else {}))
        ax.scatter(g[x], g[y], color=colours[series], marker=st["marker"], alpha=0.3, s=22, linewidths=0)
        f = front[(front["series"] == series) & (front["backend"] == backend)]
        ax.plot(f[x], f[y], color=colours[series], lw=2.5 if series == "window+sink" else 1.6, ms=5,
                zorder=3 if series == "window+sink" else 2, **st)
    for level in levels:
        ax.axvline(level, color="grey", lw=0.8, ls=":", zorder=0)
    ax.set_xlabel(axis_label(x))
    ax.set_ylabel(axis_label(y))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    _legend(ax, colours, configs["series"], configs["backend"])
    fig.tight_layout()
    return fig


def plot_flops(configs, colours: dict, y: str = "recall", title: str = ""):
    """``y`` against ``flops_ratio`` (prediction plus attention on the predicted graph, over dense
    attention's FLOPs), log x; the vertical line is dense attention."""
    fig = plot_tradeoff(configs, "flops_ratio", y, colours, title)
    ax = fig.axes[0]
    ax.set_xscale("log")
    ax.axvline(1.0, color="grey", lw=1.2, ls="--", zorder=0)
    ax.annotate("dense", (1.0, 1.0), xycoords=("data", "axes fraction"), xytext=(-4, -12),
                textcoords="offset points", ha="right", color="grey", fontsize=9)
    return fig


def plot_heatmap(grid, title: str, label: str, cmap: str = "viridis", vmin=None, vmax=None):
    """A ``[layers x heads]`` grid (rows = layers) with its values written in the cells."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    rows, cols = grid.shape
    fig, ax = plt.subplots(figsize=(max(5.0, 0.62 * cols + 2.2), max(2.6, 0.42 * rows + 1.4)))
    sns.heatmap(grid, ax=ax, cmap=cmap, vmin=vmin, vmax=vmax, annot=rows * cols <= 400, fmt=".2f",
                annot_kws={"fontsize": 7}, cbar_kws={"label": label}, linewidths=0.4, linecolor="white")
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_scaling(scaling, reference: str = "entmax15-topk", title: str = ""):
    """Mean time against ``n``, log-log: dense references in grey (the crossover ``reference`` in black),
    predictors in colour, line style by backend."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.ticker import NullLocator

    fig, ax = plt.subplots(figsize=(8.5, 5.0))
    dense = scaling[scaling["backend"] == "dense"]
    greys = dict(zip(sorted(dense["method"].unique()), sns.color_palette("Greys", dense["method"].nunique() + 2)[2:]))
    for method, g in dense.groupby("method", sort=True):
        ref = method == reference
        ax.plot(g["n"], g["time_mean"], color="black" if ref else greys[method], lw=2.4 if ref else 1.4,
                ls="-" if ref else "-.", marker="s", ms=4, label=f"dense {method}" + (" (reference)" if ref else ""))
    preds = scaling[scaling["backend"] != "dense"]
    methods = sorted(preds["method"].unique())
    colour = dict(zip(methods, colours(len(methods))))
    for (method, backend), g in preds.groupby(["method", "backend"], sort=True):
        ax.plot(g["n"], g["time_mean"], color=colour[method], ms=5, label=f"{method} ({backend})", **_style(backend))
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ns = sorted(scaling["n"].unique())
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.set_xlabel("sequence length n")
    ax.set_ylabel("mean time per call (s)")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9)
    fig.tight_layout()
    return fig


def plot_downstream(frame, colours: dict, title: str = ""):
    """Downstream metric against effective sparsity for one dataset (:func:`bench.report.pareto.downstream_frame`):
    every configuration as a faint point, each family's Pareto front (sparser and better, in the
    metric's own direction) as a line, the dense-entmax model as a dashed horizontal line."""
    import matplotlib.pyplot as plt

    from bench.report import pareto

    fig, ax = plt.subplots(figsize=(8.5, 5.0))
    dense = frame[frame["series"] == "dense"]
    sub = frame[frame["series"] != "dense"]
    for series, g in sub.groupby("series", sort=True):
        colour, base = colours.get(series, "grey"), series == "window+sink"
        ax.scatter(g["sparsity"], g["value"], color=colour, alpha=0.35, s=22, linewidths=0)
        hib = bool(g["higher_is_better"].iloc[0])
        front = g[pareto.pareto_mask(g["sparsity"].to_numpy(float), g["value"].to_numpy(float), True, hib)]
        front = front.sort_values("sparsity")
        ax.plot(front["sparsity"], front["value"], color=colour, marker="o", ms=5, lw=2.5 if base else 1.6,
                zorder=3 if base else 2, label=series_caption(series))
    ref = dense["value"] if len(dense) else frame["reference"]
    if ref.notna().any():
        ax.axhline(float(ref.dropna().iloc[0]), color="grey", ls="--", lw=1.2, zorder=0, label="dense entmax")
    metric = frame["metric"].iloc[0] if len(frame) else ""
    ax.set_xlabel("effective sparsity of the restricted run (share of pairs not computed)")
    ax.set_ylabel(axis_label(metric))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- outputs of a notebook


def markdown_table(df, floatfmt: str = ".3f", index: bool = False) -> str:
    """A GitHub-flavoured Markdown table of ``df``; NaN and None print as an en dash."""
    frame = df.reset_index() if index else df

    def cell(v) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "–"
        if isinstance(v, float):
            return format(v, floatfmt)
        return str(v).replace("|", "\\|")

    cols = [cell(str(c)) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def file_id(text: str) -> str:
    """A file-name-safe id of a dataset or metric name (``file:/x/my data.st`` -> ``file-my_data``)."""
    from bench.data.sources import dataset_id

    return re.sub(r"[^A-Za-z0-9_.+-]", "_", dataset_id(text))


class Outputs:
    """What a notebook leaves beside itself: figures (PNG), tables (CSV) and a manifest that
    :func:`render` turns into README.md. Used from the notebooks::

        out = Outputs(out_dir)
        out.figure(fig, "tradeoff-sparsity-recall--minilm", "minilm: recall against sparsity")
        out.table(df, "matched-sparsity")
        out.finding("...markdown...")
        out.section("Best recall at matched sparsity", markdown_table(df))
        out.close()                      # writes the manifest
    """

    def __init__(self, out_dir: str | Path, manifest: str = "report.manifest.json", dpi: int = 150):
        self.dir = Path(out_dir)
        self.manifest_name = manifest
        (self.dir / "figures").mkdir(parents=True, exist_ok=True)
        (self.dir / "tables").mkdir(parents=True, exist_ok=True)
        self.dpi = dpi
        self.manifest: dict = {"figures": [], "tables": [], "findings": [], "sections": []}

    def figure(self, fig, name: str, title: str, show: bool = True) -> Path:
        """Save ``fig`` as ``figures/<name>.png``, close it, and show that very file (drawn once, so the
        HTML and the PNG are the same picture), at 100 dpi's width."""
        import matplotlib.pyplot as plt

        path = self.dir / "figures" / f"{name}.png"
        fig.savefig(path, dpi=self.dpi, bbox_inches="tight")
        plt.close(fig)
        self.manifest["figures"].append({"path": f"figures/{name}.png", "title": title})
        if show:
            from IPython.display import Image, display

            img = Image(filename=str(path))
            width = int.from_bytes(img.data[16:20], "big")  # PNG header: IHDR width
            display(Image(data=img.data, format="png", width=round(width * 100 / self.dpi)))
        return path

    def table(self, df, name: str, title: str = "", index: bool = False) -> Path:
        path = self.dir / "tables" / f"{name}.csv"
        df.to_csv(path, index=index)
        self.manifest["tables"].append({"path": f"tables/{name}.csv", "title": title or name})
        return path

    def finding(self, markdown: str) -> None:
        """Markdown for the top of README.md (the key findings)."""
        self.manifest["findings"].append(markdown)

    def section(self, title: str, markdown: str) -> None:
        """A titled Markdown section of README.md (e.g. a table), after the findings."""
        self.manifest["sections"].append({"title": title, "markdown": markdown})

    def close(self) -> Path:
        path = self.dir / self.manifest_name
        path.write_text(json.dumps(self.manifest, indent=1))
        return path


# ---------------------------------------------------------------- rendering


def notebook_parameters(path: Path) -> dict:
    """Names and literal values of the ``parameters`` cell of notebook ``path``."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise BenchError(f"{path} must have exactly one cell tagged 'parameters', found {len(cells)}")
    out = {}
    for node in ast.parse(cells[0].source).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            raise BenchError(f"{path}: the parameters cell may only assign literal values to names")
        try:
            out[node.targets[0].id] = ast.literal_eval(node.value)
        except ValueError:
            raise BenchError(f"{path}: parameter {node.targets[0].id} is not a literal value") from None
    return out


def template_path(ref: str | Path) -> Path:
    """A notebook template: a path to an ``.ipynb`` file, or a name looked up in ``$SPARSEBENCH_NOTEBOOKS``,
    the ``notebooks/`` folder beside the package, then ``./notebooks``."""
    if str(ref).endswith(".ipynb"):
        if not Path(ref).is_file():
            raise BenchError(f"notebook {ref} not found")
        return Path(ref)
    dirs = [Path(os.environ["SPARSEBENCH_NOTEBOOKS"])] if os.environ.get("SPARSEBENCH_NOTEBOOKS") else []
    dirs += [NOTEBOOK_DIR, Path.cwd() / "notebooks"]
    for d in dirs:
        if (d / f"{ref}.ipynb").is_file():
            return d / f"{ref}.ipynb"
    raise BenchError(f"notebook template {ref}.ipynb not found in {', '.join(map(str, dirs))} (the templates "
                     "live in the source tree's notebooks/; run from the project root or set SPARSEBENCH_NOTEBOOKS)")


def check_kernel() -> None:
    """Fail with a clear message unless kernel ``python3`` would run this interpreter with ipykernel."""
    if importlib.util.find_spec("ipykernel") is None:
        raise BenchError("rendering needs ipykernel, papermill, nbconvert, seaborn and matplotlib in this "
                         "environment: pip install '.[report]'")
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(KERNEL)
    except NoSuchKernel:
        raise BenchError(f"no Jupyter kernel {KERNEL!r} found; python -m ipykernel install --sys-prefix") from None
    exe = spec.argv[0] if spec.argv else ""
    bare = {"python", "python3", f"python{sys.version_info[0]}.{sys.version_info[1]}"}
    if exe not in bare and os.path.abspath(exe) != os.path.abspath(sys.executable):
        raise BenchError(f"the Jupyter kernel {KERNEL!r} ({spec.resource_dir}) runs {exe}, not this "
                         f"interpreter {sys.executable}; remove or fix that kernelspec")


def _clean_previous(out: Path) -> None:
    # Only what an earlier render listed in its manifests: stale figures must not linger beside new ones.
    for manifest in out.glob("*.manifest.json"):
        try:
            old = json.loads(manifest.read_text())
        except json.JSONDecodeError:
            continue
        for item in old.get("figures", []) + old.get("tables", []):
            p = out / item["path"]
            if p.is_file() and p.resolve().is_relative_to(out.resolve()):
                p.unlink()
        manifest.unlink()


def to_html(nb, title: str, alts: Sequence[str] = ()) -> str:
    """Standalone HTML of an executed notebook: code and prompts hidden, images embedded as data
    URIs, and no script loaded from the network (MathJax and require.js are left out). ``alts``, when
    there is one per image, become the images' alternative texts (in order)."""
    import html as html_lib

    from nbconvert import HTMLExporter

    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True,
                            mathjax_url="", require_js_url="")
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title}})
    body = re.sub(r'<script src=""></script>\s*', "", body)
    missing = 'alt="No description has been provided for this image"'
    if alts and body.count(missing) == len(alts):
        texts = iter(alts)
        body = re.sub(re.escape(missing), lambda _: f'alt="{html_lib.escape(next(texts))}"', body)
    return body


def write_readme(out: Path, run_dir: Path, names: Sequence[str]) -> Path:
    """README.md of a rendered report: findings, then every figure and table, from the manifests."""
    lines = [f"# Trade-off report of run `{run_dir.name}`", "",
             f"Rendered from the run folder `{os.path.relpath(run_dir, out)}` by `python -m bench.report`. "
             "Full report, figures embedded and code hidden: "
             + ", ".join(f"[{n}.html]({n}.html)" for n in names) + ".", ""]
    for name in names:
        m = json.loads((out / f"{name}.manifest.json").read_text())
        if m["findings"]:
            lines += ["## Key findings", ""] + [f + "\n" for f in m["findings"]]
        for sec in m.get("sections", []):
            lines += [f"## {sec['title']}", "", sec["markdown"], ""]
        lines += ["## Figures", ""]
        for f in m["figures"]:
            lines += [f"### {f['title']}", "", f"![{f['title']}]({f['path']})", ""]
        if m["tables"]:
            lines += ["## Tables (CSV)", ""] + [f"- [{t['title']}]({t['path']})" for t in m["tables"]] + [""]
    path = out / "README.md"
    path.write_text("\n".join(lines))
    return path


def render(run_dir: str | Path, out_dir: str | Path | None = None, *, parameters: dict | None = None,
           notebooks: Sequence[str | Path] = NOTEBOOKS, timeout: int = 900) -> list[Path]:
    """Execute the report notebook(s) on ``run_dir`` and render them.

    Parameters
    ----------
    run_dir : a run folder with ``summary.json`` (and ``results.csv`` for the per-head figures)
    out_dir : where the outputs go (default ``run_dir/report``); created if needed
    parameters : values for the notebook's ``parameters`` cell (``dataset``, ``x_metric``, ``y_metric``,
        ``predictor``, ``levels``, ``level``, ``reference``); an unknown name is an error
    notebooks : template names in ``notebooks/`` or paths to ``.ipynb`` files
    timeout : seconds allowed to each cell

    Returns
    -------
    The paths written: executed notebooks, HTML pages, README.md, then figures and tables.
    """
    run = Path(run_dir).resolve()
    if not (run / "summary.json").is_file():
        raise BenchError(f"{run_dir} has no summary.json: give a finished run folder (reports/runs/NAME)")
    out = Path(out_dir).resolve() if out_dir else run / "report"
    params = dict(parameters or {})
    fixed = sorted(set(params) & {"run_dir", "out_dir", "manifest"})
    if fixed:
        raise BenchError(f"{', '.join(fixed)} are set by render itself (use its arguments), not as parameters")
    _check_parameters(run, params)
    templates = [template_path(ref) for ref in notebooks]
    for template in templates:
        known = notebook_parameters(template)
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise BenchError(f"{template.name} has no parameter {', '.join(unknown)}; known: {', '.join(known)}")
    check_kernel()
    import nbformat
    import papermill as pm

    out.mkdir(parents=True, exist_ok=True)
    _clean_previous(out)
    written, names = [], []
    # Where `import bench` finds this package, whether it runs from a checkout or is installed.
    cwd = str(PACKAGE_PARENT)
    for template in templates:
        name = template.stem
        names.append(name)
        executed = out / f"{name}.ipynb"
        manifest = f"{name}.manifest.json"
        try:
            pm.execute_notebook(str(template), str(executed), kernel_name=KERNEL, cwd=cwd, progress_bar=False,
                                parameters={**params, "run_dir": str(run), "out_dir": str(out),
                                            "manifest": manifest},
                                execution_timeout=timeout, start_timeout=120,
                                # The kernel's own log (a warning that local TCP is unencrypted) is noise here.
                                extra_arguments=["--IPKernelApp.log_level=ERROR"])
        except pm.PapermillExecutionError as exc:
            raise BenchError(f"notebook {template.name} failed in cell {exc.exec_count}: {exc.ename}: "
                             f"{exc.evalue} (executed notebook kept at {executed})") from None
        nb = nbformat.read(executed, as_version=4)
        figures = json.loads((out / manifest).read_text())["figures"]
        html = out / f"{name}.html"
        html.write_text(to_html(nb, f"Sparsefinder Bench: {run.name} ({name})", [f["title"] for f in figures]),
                        encoding="utf-8")
        written += [executed, html]
    written.append(write_readme(out, run, names))
    for name in names:
        m = json.loads((out / f"{name}.manifest.json").read_text())
        written += [out / item["path"] for item in m["figures"] + m["tables"]]
    return written


def _check_parameters(run: Path, params: dict) -> None:
    from bench.report import pareto

    for key in ("x_metric", "y_metric"):
        if params.get(key):
            pareto.higher_is_better(params[key])
    ds = params.get("dataset")
    if ds:
        summary = json.loads((run / "summary.json").read_text())
        known = sorted({e["dataset"] for e in summary.get("predictors", [])})
        if ds not in known:
            raise BenchError(f"run {run.name} has no dataset {ds!r}; it has: {', '.join(known) or 'none'}")


# ---------------------------------------------------------------- command line


def run_from_bench_args(argv: Sequence[str]) -> Path:
    """The run folder that ``pytest -c bench/suite/pytest.ini bench/suite ARGV`` writes: ``--run``, else ``--profile``,
    else ``default`` (as in bench/suite/conftest.py), under :func:`bench.results.records.run_dir`."""
    from bench.results.records import run_dir

    found: dict = {}
    it = iter(argv)
    for arg in it:
        for opt in ("--run", "--profile"):
            if arg == opt:
                found[opt] = next(it, None)
            elif arg.startswith(opt + "="):
                found[opt] = arg.split("=", 1)[1]
    name = found.get("--run") or found.get("--profile") or "default"
    return run_dir(name)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", nargs="?", help="run folder (reports/runs/NAME) with summary.json and results.csv")
    p.add_argument("--out", help="output folder (default: RUN/report)")
    p.add_argument("--dataset", help="show only this dataset (default: every dataset of the run)")
    p.add_argument("--x", dest="x_metric", help="x metric of the headline trade-off (default sparsity)")
    p.add_argument("--y", dest="y_metric", help="y metric of the headline trade-off (default recall)")
    p.add_argument("--predictor", help="configuration of the per-head recall grid (default: best at 0.9)")
    p.add_argument("--bench-args", nargs=argparse.REMAINDER, default=None,
                   help="instead of RUN: the arguments given to the benchmark suite (tox -e bench -- ARGS)")


def cmd_report(args) -> int:
    """Render the report of ``args.run``; prints where it went. For ``sparsebench report``."""
    if args.bench_args is not None:
        run = run_from_bench_args(args.bench_args)
    elif args.run:
        run = Path(args.run)
    else:
        raise BenchError("give a run folder (reports/runs/NAME) or --bench-args")
    params = {k: getattr(args, k) for k in ("dataset", "x_metric", "y_metric", "predictor") if getattr(args, k)}
    start = time.perf_counter()
    paths = render(run, args.out, parameters=params)
    html = [p for p in paths if p.suffix == ".html"]
    print(f"report of {run} rendered in {time.perf_counter() - start:.1f} s: {len(paths)} files in {paths[0].parent}")
    for p in html + [p for p in paths if p.name == "README.md"]:
        print(f"  {p}")
    return 0


def add_report_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``report`` to a ``sparsebench`` subparsers object (sets ``func=cmd_report``)."""
    p = subparsers.add_parser("report", help="render a run's trade-off report (HTML, PNG, Markdown)")
    add_arguments(p)
    p.set_defaults(func=cmd_report)
    return p


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.split("\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return cmd_report(args)
    except BenchError as exc:
        print(f"sparsebench: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
