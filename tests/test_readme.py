"""README.md's commands work: every command line of its bash blocks is run by CI (.ci/run, with its own
options added) or by a test named in :data:`RUN_BY`; the cheap ones run here for real.

A command that CI and no test runs fails :func:`test_every_readme_command_is_run_somewhere`: when you add
one to the README, run it in .ci/run or in a test and name that test here.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CI = ROOT / ".ci" / "run"
HERE = "tests/test_readme.py::test_cheap_readme_commands_run"

#: README command (as written, comment dropped) -> the test that runs it (CI's commands need no entry).
RUN_BY = {
    "sparsebench data inspect minilm": HERE,
    "sparsebench data inspect entmax-lm": HERE,
    "sparsebench data inspect minilm-entmax": HERE,
    "sparsebench data export minilm out.safetensors": HERE,
    "sparsebench list": HERE,
    "sparsebench score --dataset minilm --predictor sf-kmeans-r4-k8-top1 --predictor window-w11-g1": HERE,
    "sparsebench compare reports/runs/smoke --baseline reports/baselines/smoke.json":
        "tests/test_compare.py::test_compare_command",
    "sparsebench rescore reports/runs/smoke": "tests/test_rescore.py::test_smoke_benchmark_rescores_bit_identical",
    "tox -e bench -- --dataset file:my.safetensors --predictors sf-*,window*":
        "tests/test_readme.py::test_bench_on_a_file_dataset_then_its_report",
    "tox -e report -- reports/runs/default": "tests/test_report.py::test_render_writes_every_output",
    "tox -e bench -- --profile smoke --seeds 0,1":
        "tests/test_suite_seeds.py::test_two_seeds_run_randomised_configurations_twice_and_keep_the_ids_of_seed_zero",
    # "Benchmark your own model": the capture command on a model folder (a tiny one in the test), then the
    # file dataset's bench run and its report.
    "tox exec -e test -- sparsebench capture path/to/model my.safetensors --samples 16 --length 256":
        "tests/test_capture.py::test_cli_capture_writes_a_file_that_loads_and_inspects",
    "tox -e bench -- --dataset file:my.safetensors":
        "tests/test_readme.py::test_bench_on_a_file_dataset_then_its_report",
    "tox -e report -- reports/runs/file-my": "tests/test_readme.py::test_bench_on_a_file_dataset_then_its_report",
    "export PYTHONPATH=/path/to/my/families SPARSEBENCH_FAMILIES=toy_family":
        "tests/test_toy_family.py::test_a_family_of_ones_own_is_listed_scored_and_benchmarked",
    "sparsebench score --dataset synthetic --predictor toy-k4-w3":
        "tests/test_toy_family.py::test_a_family_of_ones_own_is_listed_scored_and_benchmarked",
    "pytest -c bench/suite/pytest.ini bench/suite --profile smoke --predictors toy* --run toy --no-scaling":
        "tests/test_toy_family.py::test_a_family_of_ones_own_is_listed_scored_and_benchmarked",
    # "On a lent GPU": the preparation on a fake checkout (nothing downloaded), the unpacking of the archive
    # that the GPU script packs (on the CPU, where it measures nothing).
    "bash bench/suite/gpu_prepare.sh":
        "tests/test_gpu_bench.py::test_gpu_prepare_splits_faiss_gpu_so_that_each_call_fits",
    "tar xzf FILES_AT/gpu-run.tar.gz -C reports/":
        "tests/test_gpu_bench.py::test_the_gpu_script_skips_cleanly_on_the_cpu_and_packs_its_log",
    # "On a Ray cluster": the local engine, sparsebench score on Ray, and the cluster recipe (Slurm's lines
    # included) as the cluster test runs it on one machine: a head, one more node, the driver by address.
    "tox -e bench -- --engine ray": "tests/test_engine_ray.py::test_ray_gives_the_serial_quality_bit_for_bit",
    "tox -e bench -- --engine serial":
        "tests/test_engine_ray.py::test_the_default_profile_runs_on_ray_unless_told_otherwise",
    "tox exec -e test -- sparsebench score --dataset minilm --predictor sf-kmeans-r4-k8-top1 --predictor "
    "window-w11-g1 --engine ray": "tests/test_engine_ray.py::test_score_runs_many_predictors_as_ray_tasks",
    **dict.fromkeys([
        "tox -e bench -- --engine ray --address auto",
        "tox -e bench -- --engine ray --address 10.0.0.1:6379",
        "export PATH=$PWD/.tox/test/bin:$PATH RAY_AUTH_MODE=token RAY_AUTH_TOKEN=$(python -c import secrets; "
        "print(secrets.token_hex(16)))",
        "nodes=($(scontrol show hostnames $SLURM_JOB_NODELIST))",
        "head_ip=$(srun --nodes=1 --ntasks=1 -w ${nodes[0]} hostname --ip-address)",
        "srun --nodes=1 --ntasks=1 -w ${nodes[0]} ray start --head --node-ip-address=$head_ip --port=6379 "
        "--num-cpus=$SLURM_CPUS_PER_TASK --block &",
        "sleep 10",
        "srun --nodes=$((SLURM_JOB_NUM_NODES - 1)) --ntasks=$((SLURM_JOB_NUM_NODES - 1)) --exclude=${nodes[0]} ray "
        "start --address=$head_ip:6379 --num-cpus=$SLURM_CPUS_PER_TASK --block &",
        "sleep 30",
        "tox -e bench -- --engine ray --address $head_ip:6379",
    ], "tests/test_engine_ray.py::test_the_sweep_runs_on_a_cluster_joined_by_address"),
}

#: Options a cheap command gets here so that it takes seconds (the README's sizes are the defaults).
SMALL = {
    "sparsebench data inspect minilm": ["--samples", "3", "--length", "32"],
    "sparsebench data inspect entmax-lm": ["--samples", "3", "--length", "32"],
    "sparsebench data inspect minilm-entmax": ["--samples", "3", "--length", "32"],
    "sparsebench data export minilm out.safetensors": ["--samples", "2", "--length", "16"],
    "sparsebench score --dataset minilm --predictor sf-kmeans-r4-k8-top1 --predictor window-w11-g1":
        ["--samples", "6", "--length", "48"],
}


def command_lines(text: str) -> list[list[str]]:
    """The command lines of the ```bash blocks of ``text``, as tokens (quotes and comments removed)."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        out += [tokens for line in block.splitlines() if (tokens := shlex.split(line, comments=True))]
    return out


def readme_commands() -> list[str]:
    seen = []
    for tokens in command_lines(README.read_text()):
        if (cmd := " ".join(tokens)) not in seen:
            seen.append(cmd)
    return seen


def ci_commands() -> list[list[str]]:
    return [shlex.split(line, comments=True) for line in CI.read_text().splitlines() if line.strip()]


def _split(tokens: list[str]) -> tuple[list[str], list[str]]:
    i = tokens.index("--") if "--" in tokens else len(tokens)
    return tokens[:i], tokens[i + 1:]


def _subsequence(small: list[str], big: list[str]) -> bool:
    it = iter(big)
    return all(tok in it for tok in small)


def run_by_ci(cmd: str) -> bool:
    """CI runs ``cmd``: a line of .ci/run with the same command before ``--`` and the README's arguments
    after it among its own, in order (``tox -e bench -- --fresh`` is in ``tox -e bench -- --profile smoke
    --run ci-smoke --fresh``)."""
    head, args = _split(shlex.split(cmd))
    for line in ci_commands():
        ci_head, ci_args = _split(line)
        if ci_head == head and _subsequence(args, ci_args):
            return True
    return False


def test_commands_are_read_from_every_bash_block():
    cmds = readme_commands()
    assert "tox -e bench" in cmds and "tox -e test" in cmds and "sparsebench list" in cmds
    assert RUN_BY.keys() <= set(cmds), f"RUN_BY names commands the README no longer has: " \
                                       f"{sorted(set(RUN_BY) - set(cmds))}"
    assert run_by_ci("tox -e bench -- --fresh") and not run_by_ci("tox -e bench -- --profile full")


def test_every_readme_command_is_run_somewhere():
    missing = [c for c in readme_commands() if c not in RUN_BY and not run_by_ci(c)]
    assert not missing, f"README commands that neither CI (.ci/run) nor a test (RUN_BY) runs: {missing}"


@pytest.mark.parametrize("test_id", sorted(set(RUN_BY.values())))
def test_the_tests_named_exist_and_run_the_command(test_id):
    path, name = test_id.split("::")
    tree = ast.parse((ROOT / path).read_text())
    funcs = {n.name: ast.get_source_segment((ROOT / path).read_text(), n) for n in ast.walk(tree)
             if isinstance(n, ast.FunctionDef)}
    assert name in funcs, f"{test_id} does not exist"
    for cmd in (c for c, t in RUN_BY.items() if t == test_id and t != HERE):
        word = next((w for w in shlex.split(cmd)[1:] if not w.startswith("-") and "=" not in w), None)
        if cmd.startswith("sparsebench ") and word:
            assert f'"{word}"' in funcs[name], f"{test_id} does not run `{cmd}` (no {word!r} in it)"


#: Sources whose model the README's command trains for minutes: the same command on a short training.
SHORT_TRAINING = {"entmax-lm": ("bench.data.entmax_lm", 8), "minilm-entmax": ("bench.data.minilm_entmax", 2)}


@pytest.mark.parametrize("cmd", [pytest.param(c, marks=pytest.mark.slow)
                                 if any(s in c.split() for s in SHORT_TRAINING) else c
                                 for c, t in RUN_BY.items() if t == HERE])
def test_cheap_readme_commands_run(cmd, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SPARSEBENCH_REPORTS", str(tmp_path / "reports"))
    monkeypatch.chdir(tmp_path)
    for source, (module, steps) in SHORT_TRAINING.items():
        if source in cmd.split():
            import importlib

            monkeypatch.setattr(importlib.import_module(module), "DEFAULT_STEPS", steps)
    argv = shlex.split(cmd)[1:] + SMALL.get(cmd, [])
    assert main(argv) == 0
    out = capsys.readouterr().out
    if argv[:2] == ["data", "inspect"]:
        assert "gold computed in" in out
        assert main(argv) == 0 and "gold read from the cache" in capsys.readouterr().out
    elif argv[:2] == ["data", "export"]:
        written = tmp_path / "reports" / "exports" / "out.safetensors"
        assert written.is_file() and f"to {written}" in out
        assert main(argv[:2] + ["minilm", str(tmp_path), *SMALL[cmd]]) == 2  # a folder is no target
        assert "is a folder" in capsys.readouterr().err
    elif argv[0] == "score":
        assert out.count("\n== ") == 2 and "means: recall" in out
    else:
        assert "kinds of family:" in out and "window [fixed]" in out


def test_exports_are_ignored_by_git():
    probe = subprocess.run(["git", "check-ignore", "-q", "reports/exports/out.safetensors"], cwd=ROOT)
    if probe.returncode == 128:
        pytest.skip("not a git checkout")
    assert probe.returncode == 0, "reports/exports/ is not ignored by git"


@pytest.mark.slow
def test_bench_on_a_file_dataset_then_its_report(tmp_path, monkeypatch):
    """``tox -e bench -- --dataset file:my.safetensors --predictors 'sf-*,window*'``: the suite on a file
    (smoke sweep, no scaling), then the run folder that ``python -m bench.report --bench-args`` renders
    is the one the suite wrote."""
    import os

    from bench.report.cli import run_from_bench_args

    reports = tmp_path / "reports"
    monkeypatch.setenv("SPARSEBENCH_REPORTS", str(reports))
    data = tmp_path / "my.safetensors"
    assert main(["data", "export", "synthetic", str(data), "--samples", "6", "--length", "40"]) == 0
    args = ["--dataset", f"file:{data}", "--predictors", "sf-*,window*"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
    cmd = [sys.executable, "-m", "pytest", "-c", "bench/suite/pytest.ini", "bench/suite", *args,
           "--profile", "smoke", "--no-scaling", "--backend", "torch", "-k", "bench_predictor"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = run_from_bench_args([*args, "--profile", "smoke"])
    assert run == reports / "runs" / "file-my"
    summary = json.loads((run / "summary.json").read_text())
    families = {e["family"] for e in summary["predictors"]}
    assert {"sf-dist", "sf-quant", "sf-kmeans", "window"} <= families
