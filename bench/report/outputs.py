"""What a report notebook writes beside itself: PNG figures, CSV tables, Markdown tables and the
manifest from which :func:`bench.report.render.write_readme` builds README.md; and how names and paths
are shown in it."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path


def shown_path(path) -> str:
    """``path`` as a report shows it: relative to the current folder when inside it (the same text on
    every machine for a run under the project, e.g. ``reports/reference``), else as given."""
    p = Path(path).resolve()
    try:
        return p.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path)


# Name parts of measured quantities: a column named with one is never shown as integers, even when its
# values happen to be whole (a recall of exactly 1.0 stays 1.000).
MEASURE_WORDS = frozenset({
    "recall", "sparsity", "mass", "precision", "exact", "error", "level", "estimate", "lo", "hi", "covered",
    "delta", "value", "reference", "speedup", "seconds", "time", "ratio", "auc", "at", "cosine", "bpc",
    "density"})


def as_integers(df):
    """``df`` with every float column whose finite values are all whole numbers as integers (pandas
    ``Int64``, missing for NaN): counts, lengths, parameters print as ``16``, never ``16.0``. Columns
    named with a :data:`MEASURE_WORDS` part stay floats."""
    import numpy as np
    import pandas as pd

    out = df.copy()
    for c in out.columns:
        col = out[c]
        if col.dtype.kind != "f" or set(str(c).lower().split("_")) & MEASURE_WORDS:
            continue
        vals = col.to_numpy(float)
        finite = vals[np.isfinite(vals)]
        if len(finite) and np.all(finite == np.round(finite)) and np.all(np.abs(finite) < 2 ** 53) \
                and not np.isinf(vals).any():
            out[c] = pd.array([None if np.isnan(v) else int(v) for v in vals], dtype="Int64")
    return out


def markdown_table(df, floatfmt: str = ".3f", index: bool = False) -> str:
    """A GitHub-flavoured Markdown table of ``df`` (whole-number columns as integers, :func:`as_integers`);
    NaN, None and missing values print as an en dash."""
    import pandas as pd

    frame = as_integers(df.reset_index() if index else df)

    def cell(v) -> str:
        if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
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

    def figure(self, fig, name: str, title: str, caption: str = "", show: bool = True) -> Path:
        """Save ``fig`` as ``figures/<name>.png``, close it, and show that very file (drawn once, so the
        HTML and the PNG are the same picture), at 100 dpi's width, with its ``caption`` below it (the
        caption goes to README.md too)."""
        import matplotlib.pyplot as plt

        path = self.dir / "figures" / f"{name}.png"
        fig.savefig(path, dpi=self.dpi, bbox_inches="tight")
        plt.close(fig)
        self.manifest["figures"].append({"path": f"figures/{name}.png", "title": title, "caption": caption})
        if show:
            from IPython.display import Image, Markdown, display

            img = Image(filename=str(path))
            width = int.from_bytes(img.data[16:20], "big")  # PNG header: IHDR width
            display(Image(data=img.data, format="png", width=round(width * 100 / self.dpi)))
            if caption:
                display(Markdown(f"*{caption}*"))
        return path

    def table(self, df, name: str, title: str = "", index: bool = False) -> Path:
        """Save ``df`` as ``tables/<name>.csv`` (whole-number columns as integers: :func:`as_integers`)."""
        path = self.dir / "tables" / f"{name}.csv"
        as_integers(df).to_csv(path, index=index)
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
