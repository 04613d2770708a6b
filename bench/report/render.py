"""Trade-off reports of a finished run: notebooks executed with papermill, HTML without code, PNG figures.

Each template of ``notebooks/`` (one cell tagged ``parameters``, literal values only) is executed with
papermill into the output folder (default ``RUN_DIR/report/``)::

    report/report.ipynb   the executed notebook (code and outputs)
    report/report.html    standalone HTML, code hidden, figures embedded (opens offline in a browser)
    report/figures/*.png  every figure, as files (for a code-hosting site, linked from README.md)
    report/tables/*.csv   the numbers behind the tables (numbers only, NaN where undefined)
    report/README.md      the key findings (claim, front tables, crossover), sections and every figure with its caption
    report/report.manifest.json   what the notebook wrote (a later render removes exactly that first)

The notebooks only read ``summary.json`` and ``results.csv`` (:mod:`bench.report.frames`,
:mod:`bench.report.selection`); every number they show comes from :mod:`bench.report.fair` (fronts
selected on validation, read on eval, with bootstrap intervals), :mod:`bench.report.claims`,
:mod:`bench.report.pareto`, :mod:`bench.report.heads` and :mod:`bench.report.crossover`, every figure from
:mod:`bench.report.facets` and :mod:`bench.report.figures`, and they write through
:class:`bench.report.outputs.Outputs`. The command line is :mod:`bench.report.cli`.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.data.atomic import writable
from bench.errors import BenchError
from bench.evaluation.metric_table import metric
from bench.report.selection import FRONT_METRICS

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
    if exe not in bare and not same_interpreter(exe, sys.executable):
        raise BenchError(f"the Jupyter kernel {KERNEL!r} ({spec.resource_dir}) runs {exe}, not this "
                         f"interpreter {sys.executable}; remove or fix that kernelspec")


def same_interpreter(a: str, b: str) -> bool:
    """Whether executables ``a`` and ``b`` run one Python with the same packages.

    They must be one binary once links are followed (a venv's ``python`` and ``python3`` are links to
    one), in one environment: every venv's ``python`` links to its base interpreter, so two venvs share
    that binary but not their packages; the folder above ``bin/`` that holds ``pyvenv.cfg`` tells them apart.
    """
    return os.path.realpath(a) == os.path.realpath(b) and _venv_root(a) == _venv_root(b)


def _venv_root(exe: str) -> str | None:
    # The link itself is not followed (it leads out of the venv), only the folders it sits in.
    root = os.path.dirname(os.path.realpath(os.path.dirname(os.path.abspath(exe))))
    return root if os.path.isfile(os.path.join(root, "pyvenv.cfg")) else None


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
    """README.md of a rendered report: findings, then the sections (tables, the environment), every
    figure with its caption, and the CSV tables, from the manifests."""
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
            lines += [f"*{f['caption']}*", ""] if f.get("caption") else []
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
        ``predictor``, ``levels``, ``window``, ``n_boot``, ``boot_seed``, ``level``, ``reference``); an
        unknown name is an error
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
    templates = _checked_templates(run, params, notebooks)
    writable(out, "report folder")  # before minutes of notebooks
    check_kernel()
    out.mkdir(parents=True, exist_ok=True)
    _clean_previous(out)
    written = []
    for template in templates:
        written += _execute(template, run, out, params, timeout)
    names = [template.stem for template in templates]
    written.append(write_readme(out, run, names))
    for name in names:
        m = json.loads((out / f"{name}.manifest.json").read_text())
        written += [out / item["path"] for item in m["figures"] + m["tables"]]
    return written


def _checked_templates(run: Path, params: dict, notebooks: Sequence[str | Path]) -> list[Path]:
    """The templates of ``notebooks``, once ``params`` are known to be valid for ``run`` and every one
    of them (bad input fails here, before a kernel starts or anything is written)."""
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
    return templates


def _execute(template: Path, run: Path, out: Path, params: dict, timeout: int) -> list[Path]:
    """Execute one template into ``out`` with papermill and write its HTML; returns both paths."""
    import nbformat
    import papermill as pm

    name = template.stem
    executed = out / f"{name}.ipynb"
    manifest = f"{name}.manifest.json"
    try:
        # cwd: where `import bench` finds this package, whether it runs from a checkout or is installed.
        pm.execute_notebook(str(template), str(executed), kernel_name=KERNEL, cwd=str(PACKAGE_PARENT),
                            progress_bar=False,
                            parameters={**params, "run_dir": str(run), "out_dir": str(out), "manifest": manifest},
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
    return [executed, html]


def _check_parameters(run: Path, params: dict) -> None:
    for key in ("x_metric", "y_metric"):
        if params.get(key):
            metric(params[key])  # an unknown metric is an error naming the known ones
    if params.get("x_metric", "sparsity") != "sparsity":
        raise BenchError(f"the report reads fronts at sparsity levels: x must be sparsity, not {params['x_metric']}")
    if params.get("y_metric") and params["y_metric"] not in FRONT_METRICS:
        raise BenchError(f"the headline fronts need a higher-better per-sample metric ({', '.join(FRONT_METRICS)}), "
                         f"not {params['y_metric']}")
    ds = params.get("dataset")
    if ds:
        summary = json.loads((run / "summary.json").read_text())
        known = sorted({e["dataset"] for e in summary.get("predictors", [])})
        if ds not in known:
            raise BenchError(f"run {run.name} has no dataset {ds!r}; it has: {', '.join(known) or 'none'}")
