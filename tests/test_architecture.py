"""The package's shape: predictors/ stands alone, bench/ stages import only earlier stages, benchmark
modules import no other benchmark module, and one table says which way every metric is better."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from bench.errors import BenchError
from bench.evaluation import metric_table
from bench.evaluation.metrics import METRICS

ROOT = Path(__file__).resolve().parents[1]
# Pipeline order: a stage may import itself and the stages before it (and predictors, errors, env, and
# progress: console progress of long steps, which every stage may report).
STAGES = ("data", "execution", "evaluation", "results", "engine", "config", "report")
FOUNDATION = {"bench", "bench.errors", "bench.env", "bench.progress"}


def imported_modules(path: Path) -> set[str]:
    """Every absolute module name that ``path`` imports, at any depth (lazy imports included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def python_files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("path", python_files("predictors"), ids=lambda p: str(p.relative_to(ROOT)))
def test_predictors_import_nothing_from_bench(path):
    bad = sorted(m for m in imported_modules(path) if m == "bench" or m.startswith("bench."))
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "bench" and parts[1] in STAGES else None


def _in_foundation(module: str) -> bool:
    """``module`` is a foundation module or a name in one (``from bench.errors import BenchError``)."""
    return any(module.startswith(f + ".") for f in FOUNDATION - {"bench"})


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_imports_only_earlier_stages(stage):
    allowed = set(STAGES[: STAGES.index(stage) + 1])
    for path in python_files(f"bench/{stage}"):
        for m in imported_modules(path):
            other = _stage(m)
            if other is None:
                assert not m.startswith("bench.") or m in FOUNDATION or _in_foundation(m), \
                    f"{path.relative_to(ROOT)} imports {m}"
                continue
            assert other in allowed, f"{path.relative_to(ROOT)} ({stage}) imports the later stage {m}"


@pytest.mark.parametrize("module", sorted(FOUNDATION - {"bench"}))
def test_foundation_modules_import_no_stage(module):
    path = ROOT / (module.replace(".", "/") + ".py")
    bad = sorted(m for m in imported_modules(path) if m.startswith("bench.") and m not in FOUNDATION
                 and not _in_foundation(m))
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_benchmark_modules_import_no_other_benchmark_module():
    suite = python_files("bench/suite")
    assert suite, "no benchmark modules found"
    stems = {p.stem for p in suite}
    for path in suite:
        bad = sorted(m for m in imported_modules(path) if m.split(".")[-1] in stems and m.split(".")[-1] != "conftest")
        assert not bad, f"{path.relative_to(ROOT)} imports benchmark module(s) {bad}"


def test_the_suite_is_not_an_installed_package():
    assert not (ROOT / "bench" / "suite" / "__init__.py").exists()


def test_metric_table_covers_every_pair_metric_with_a_direction():
    assert METRICS == metric_table.PAIR_METRICS
    assert metric_table.higher_is_better("recall") and not metric_table.higher_is_better("output_error")
    assert not metric_table.higher_is_better("bpc") and metric_table.higher_is_better("cosine")
    gates = metric_table.default_gates()
    assert gates == {"recall": {"tolerance": 0.01, "higher_is_better": True},
                     "sparsity": {"tolerance": 0.01, "higher_is_better": True},
                     "exact": {"tolerance": 0.02, "higher_is_better": True}}
    with pytest.raises(BenchError, match="unknown metric 'recal'"):
        metric_table.metric("recal")
