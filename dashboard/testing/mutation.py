"""Mutation testing module by module, and the score per module (``make mutate``; docs/testing.md).

mutmut 3 reads one ``[tool.mutmut]`` table, so one run mutates every listed module against one test selection,
and its first step (one run of the whole selection under trampolines) did not fit on two shared cores.
``python -m dashboard.testing.mutation run`` instead scores each module in its own scratch copy of the tree
(``<scratch>/<module>``, kept between runs so a rerun only runs mutants whose code or tests changed) whose
``[tool.mutmut]`` mutates only that module against only the test files in :data:`MODULE_TESTS`.

``python -m dashboard.testing.mutation [score] [MUTMUT]`` reads ``mutmut results --all true`` (lines
``    <mutant>: <status>``) in the current directory and prints, per mutated module, the killed share and the
mutants that survived (survived, no tests, suspicious), so each can be killed by a test or listed in
docs/testing.md as equivalent.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

KILLED = {"killed", "timeout", "caught by type check"}
# "segfault" is mutmut's name for a worker ended by signal 9 or 11: with torch under a plain fork that was the
# worker dying, not the tests failing (the mutant passed them when run alone), so it counts as not killed
SURVIVED = {"survived", "no tests", "suspicious", "segfault"}

# module -> the test files that check its answers (the per-module test selection). Order: value and cost.
MODULE_TESTS: dict[str, list[str]] = {
    "dashboard/engine/unit_iou.py": ["tests/engine/test_dissection.py", "tests/engine/test_properties.py"],
    "dashboard/engine/dissection.py": ["tests/engine/test_dissection.py", "tests/engine/test_properties.py"],
    "dashboard/engine/tcav.py": ["tests/engine/test_tcav.py"],
    "dashboard/evaluation/metrics.py": ["tests/evaluation/test_metrics.py", "tests/evaluation/test_evaluation.py"],
    "model_zoo/metrics.py": ["tests/evaluation/test_metrics.py", "tests/model_zoo/test_model_zoo.py",
                             "tests/model_zoo/test_train.py", "tests/data/test_patient_split.py"],
    "dashboard/study/results.py": ["tests/study/test_results.py"],
    "dashboard/engine/probes.py": ["tests/engine/test_probes.py", "tests/engine/test_properties.py"],
    "dashboard/engine/report.py": ["tests/engine/test_report.py", "tests/engine/test_layer_decomposition.py"],
    "dashboard/imaging/windowing.py": ["tests/imaging/test_imaging.py", "tests/imaging/test_properties.py",
                                       "tests/imaging/test_display_pydicom.py"],
    "dashboard/imaging/geometry.py": ["tests/imaging/test_imaging.py", "tests/imaging/test_properties.py",
                                      "tests/imaging/test_real_scale.py"],
    "dashboard/data/store.py": ["tests/data/test_store.py", "tests/data/test_store_hostile.py"],
}
# not copied into a scratch tree (git, results, data, caches); .venv is linked instead
_TOP_SKIP = {".git", "mutants", "data", ".venv", "test-artifacts", ".whl", ".gl"}
_SKIP = shutil.ignore_patterns("__pycache__", ".hypothesis", ".pytest_cache")
_TABLE = re.compile(r"^\[tool\.mutmut\]\n.*?(?=^\[|\Z)", re.S | re.M)


def parse_results(text: str) -> dict[str, dict[str, str]]:
    """{module: {mutant name: status}} from ``mutmut results --all true`` output."""
    out: dict[str, dict[str, str]] = defaultdict(dict)
    for line in text.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if not sep or "__mutmut_" not in name:
            continue
        module = name.split("__mutmut_")[0].rsplit(".", 1)[0]
        out[module][name] = status.strip()
    return dict(out)


def score_lines(results: dict[str, dict[str, str]]) -> list[str]:
    """One line per module (killed / counted, score) then its survivors, and a total line."""
    lines, total = [], Counter()
    for module in sorted(results):
        counts = Counter(results[module].values())
        killed = sum(counts[s] for s in KILLED)
        counted = killed + sum(counts[s] for s in SURVIVED)
        total.update(killed=killed, counted=counted)
        pct = f"{100 * killed / counted:.1f} %" if counted else "n/a"
        lines.append(f"{module}: {killed}/{counted} killed ({pct}); " + ", ".join(
            f"{k} {v}" for k, v in sorted(counts.items())))
        lines += [f"    survived: {m} ({s})" for m, s in sorted(results[module].items()) if s in SURVIVED]
    if total["counted"]:
        lines.append(f"TOTAL: {total['killed']}/{total['counted']} killed "
                     f"({100 * total['killed'] / total['counted']:.1f} %)")
    return lines


def module_table(table: str, module: str, tests: list[str]) -> str:
    """The ``[tool.mutmut]`` table ``table`` narrowed to mutate ``module`` against ``tests`` only."""
    def setting(text: str, key: str, value: list[str]) -> str:
        line = f"{key} = [" + ", ".join(f'"{v}"' for v in value) + "]\n"
        # a list value may span lines: it ends at the first "]" that closes a line
        pattern = re.compile(rf"^{key}\s*=\s*\[.*?\][ \t]*(#[^\n]*)?\n", re.S | re.M)
        return pattern.sub(lambda _: line, text, count=1) if pattern.search(text) else text + line
    table = setting(table, "only_mutate", [module])
    return setting(table, "pytest_add_cli_args_test_selection", tests)


def prepare_scratch(root: Path, scratch: Path, module: str, tests: list[str]) -> None:
    """Copy the tree at ``root`` over ``scratch`` (keeping its ``mutants/``) and narrow its mutmut config."""
    scratch.mkdir(parents=True, exist_ok=True)
    for item in root.iterdir():
        if item.name in _TOP_SKIP or _SKIP(str(root), [item.name]):
            continue
        dest = scratch / item.name
        if item.is_dir():
            shutil.copytree(item, dest, ignore=_SKIP, dirs_exist_ok=True)
        else:
            shutil.copy2(item, dest)
    if not (scratch / ".venv").exists() and (root / ".venv").exists():
        (scratch / ".venv").symlink_to((root / ".venv").resolve())
    pyproject = (root / "pyproject.toml").read_text()
    table = _TABLE.search(pyproject)
    if table is None:
        raise SystemExit("pyproject.toml has no [tool.mutmut] table")
    narrowed = module_table(table.group(0), module, tests)
    (scratch / "pyproject.toml").write_text(pyproject[:table.start()] + narrowed + pyproject[table.end():])


def results_of(mutmut: str, cwd: Path) -> dict[str, dict[str, str]]:
    text = subprocess.run([mutmut, "results", "--all", "true"], capture_output=True, text=True, check=True,
                          cwd=cwd).stdout
    return parse_results(text)


def run_modules(modules: list[str], scratch: Path, mutmut: str, children: int, root: Path) -> int:
    """Score each module in its scratch tree; print the score lines of all of them and the time each took."""
    merged: dict[str, dict[str, str]] = {}
    for module in modules:
        where = scratch / module.removesuffix(".py").replace("/", ".")
        prepare_scratch(root, where, module, MODULE_TESTS[module])
        start = time.monotonic()
        # one thread per worker: the workers are the parallelism, and OpenMP pools do not survive a fork
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        subprocess.run(["nice", mutmut, "run", "--max-children", str(children)], cwd=where, check=False, env=env)
        merged.update(results_of(mutmut, where))
        print(f"# {module}: {time.monotonic() - start:.0f} s in {where}", flush=True)
    print("\n".join(score_lines(merged)))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] != ["run"]:  # `python -m dashboard.testing.mutation [score] [MUTMUT]`: the last run's score here
        argv = argv[1:] if argv[:1] == ["score"] else argv
        mutmut = argv[0] if argv else "mutmut"
        print("\n".join(score_lines(results_of(mutmut, Path.cwd()))))
        return 0
    parser = argparse.ArgumentParser(prog="python -m dashboard.testing.mutation run")
    parser.add_argument("only", nargs="*", help="substrings of module paths to run (default: every module)")
    parser.add_argument("--mutmut", default=str(Path(sys.executable).parent / "mutmut"))
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/conceptlens-mutate"))
    parser.add_argument("--max-children", type=int, default=2)
    args = parser.parse_args(argv[1:])
    modules = [m for m in MODULE_TESTS if not args.only or any(s in m for s in args.only)]
    if not modules:
        raise SystemExit(f"no module matches {args.only}; modules: {', '.join(MODULE_TESTS)}")
    return run_modules(modules, args.scratch, args.mutmut, args.max_children, Path.cwd())


if __name__ == "__main__":
    raise SystemExit(main())
