"""The shape of the code: which package may import which, no import circles, imports at module top.

Layers, highest first (a module may import only from its own layer or below):
    pages -> dashboard.ui -> dashboard.study -> dashboard.evaluation -> dashboard.engine -> dashboard.data -> dashboard.imaging
          -> dashboard.{settings, errors, progress} -> model_zoo
``dashboard.testing`` is for tests and benchmarks only: no product module imports it.
"""
from __future__ import annotations

import ast
from pathlib import Path

import grimp
import pytest

from dashboard.settings import PROJECT_ROOT

LAYERS = ("dashboard.ui", "dashboard.study", "dashboard.export", "dashboard.evaluation", "dashboard.engine", "dashboard.data", "dashboard.imaging")
BASE = ("dashboard.settings", "dashboard.errors", "dashboard.progress")
#: The only product modules that may import streamlit (the pages too, outside the package).
STREAMLIT_MODULES = {"dashboard.ui.resources"}
#: What a page may import besides streamlit.
PAGE_IMPORTS = ("dashboard.ui",)


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph("dashboard", "model_zoo", "bench", "tests", include_external_packages=True)


def _product_modules(graph) -> set[str]:
    return {m for m in graph.find_children("dashboard") | graph.find_descendants("dashboard")
            if not m.startswith("dashboard.testing")} | {"dashboard"}


def _cycles(graph, modules: set[str]) -> list[list[str]]:
    """Strongly connected components of more than one module (or a module importing itself)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    edges = {m: graph.find_modules_directly_imported_by(m) & modules for m in modules}

    def visit(v):  # Tarjan, iterative enough for this package's depth
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in edges[v]:
                out.append(sorted(comp))

    for m in sorted(modules):
        if m not in index:
            visit(m)
    return out


def test_dashboard_imports_have_no_cycles(graph):
    # package __init__ files re-export their modules, so they are left out: a module importing its
    # own package's public API is no circle of code
    modules = {m for m in _product_modules(graph) if not graph.find_children(m)}
    assert _cycles(graph, modules) == []


def test_each_layer_imports_only_from_below(graph):
    illegal = graph.find_illegal_dependencies_for_layers(layers=LAYERS, containers=set())
    assert not illegal, [(d.importer, d.imported) for d in illegal]
    for base in BASE:
        upward = {m for m in graph.find_modules_directly_imported_by(base) if m.startswith("dashboard")}
        assert upward <= set(BASE), (base, upward)


def test_model_zoo_never_imports_dashboard(graph):
    for m in graph.find_descendants("model_zoo") | {"model_zoo"}:
        bad = {i for i in graph.find_modules_directly_imported_by(m) if i.startswith("dashboard")}
        assert not bad, (m, bad)


def test_no_product_module_imports_the_test_helpers_and_bench_never_imports_tests(graph):
    for m in _product_modules(graph):
        bad = {i for i in graph.find_modules_directly_imported_by(m) if i.startswith(("dashboard.testing", "tests", "bench"))}
        assert not bad, (m, bad)
    for m in graph.find_descendants("bench"):
        bad = {i for i in graph.find_modules_directly_imported_by(m) if i.startswith("tests")}
        assert not bad, (m, bad)


def test_only_the_resources_module_imports_streamlit(graph):
    importers = {m for m in _product_modules(graph)
                 if any(i == "streamlit" or i.startswith("streamlit") for i in graph.find_modules_directly_imported_by(m))}
    assert importers <= STREAMLIT_MODULES, importers - STREAMLIT_MODULES


def _imports(path: Path) -> list[tuple[str, ast.AST, bool]]:
    """(module imported, node, at module top?) for every import statement of a file."""
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body} | {id(n) for stmt in tree.body if isinstance(stmt, ast.If)
                                         for n in stmt.body}  # `if TYPE_CHECKING:` blocks
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            out.append((node.module or "", node, id(node) in top))
    return out


def test_pages_import_only_the_ui_and_streamlit():
    for page in sorted((PROJECT_ROOT / "pages").glob("*.py")) + [PROJECT_ROOT / "app.py"]:
        for name, _, _ in _imports(page):
            assert name.split(".")[0] == "streamlit" or name.startswith(PAGE_IMPORTS), (page.name, name)


def test_imports_sit_at_module_top_unless_an_optional_dependency_says_so():
    """An import inside a function is allowed only for an optional dependency, marked on its line
    with a comment starting ``# optional``."""
    offenders = []
    for path in sorted((PROJECT_ROOT / "dashboard").rglob("*.py")) + sorted((PROJECT_ROOT / "model_zoo").rglob("*.py")):
        lines = path.read_text().splitlines()
        for name, node, at_top in _imports(path):
            if not at_top and "# optional" not in lines[node.lineno - 1]:
                offenders.append(f"{path.relative_to(PROJECT_ROOT)}:{node.lineno} {name}")
    assert not offenders, "\n".join(offenders)
