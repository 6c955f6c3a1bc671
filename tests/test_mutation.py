"""``make mutate``'s wrapper (dashboard/testing/mutation.py): the per-module configs it writes and the score."""
from __future__ import annotations

import tomllib

from dashboard.settings import PROJECT_ROOT
from dashboard.testing import mutation


def test_every_mutated_module_has_its_own_existing_test_files():
    table = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    assert sorted(mutation.MODULE_TESTS) == sorted(table["only_mutate"])
    for module, tests in mutation.MODULE_TESTS.items():
        assert (PROJECT_ROOT / module).is_file() and tests, module
        assert all((PROJECT_ROOT / t).is_file() for t in tests), (module, tests)


def test_the_scratch_config_mutates_one_module_against_its_tests_and_keeps_the_rest(tmp_path):
    (tmp_path / "dashboard").mkdir()
    (tmp_path / "dashboard" / "m.py").write_text("x = 1\n")
    (tmp_path / "data").mkdir()  # the data directory is not copied
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.mutmut]\nsource_paths = ["dashboard"]\n'
        'only_mutate = [\n    "a.py", "b.py",\n]\npytest_add_cli_args_test_selection = ["tests/a",\n    "tests/b"]\n'
        'use_git_change_detection = false\n\n[tool.ruff]\nline-length = 120\n')
    scratch = tmp_path / "scratch"
    mutation.prepare_scratch(tmp_path, scratch, "dashboard/m.py", ["tests/test_m.py"])
    config = tomllib.loads((scratch / "pyproject.toml").read_text())
    assert config["tool"]["mutmut"] == {
        "source_paths": ["dashboard"], "only_mutate": ["dashboard/m.py"],
        "pytest_add_cli_args_test_selection": ["tests/test_m.py"], "use_git_change_detection": False}
    assert config["project"] == {"name": "x"} and config["tool"]["ruff"] == {"line-length": 120}
    assert (scratch / "dashboard" / "m.py").read_text() == "x = 1\n" and not (scratch / "data").exists()


def test_score_counts_kills_and_lists_every_survivor():
    text = """
    dashboard.a.x_f__mutmut_1: killed
    dashboard.a.x_f__mutmut_2: survived
    dashboard.a.xǁCǁm__mutmut_1: timeout
    dashboard.a.x_g__mutmut_1: no tests
    dashboard.b.x_h__mutmut_1: segfault
    dashboard.b.x_h__mutmut_2: killed
    not a mutant line
    """
    results = mutation.parse_results(text)
    assert results == {
        "dashboard.a": {"dashboard.a.x_f__mutmut_1": "killed", "dashboard.a.x_f__mutmut_2": "survived",
                        "dashboard.a.xǁCǁm__mutmut_1": "timeout", "dashboard.a.x_g__mutmut_1": "no tests"},
        "dashboard.b": {"dashboard.b.x_h__mutmut_1": "segfault", "dashboard.b.x_h__mutmut_2": "killed"}}
    lines = mutation.score_lines(results)
    assert lines[0] == "dashboard.a: 2/4 killed (50.0 %); killed 1, no tests 1, survived 1, timeout 1"
    assert lines[1:3] == ["    survived: dashboard.a.x_f__mutmut_2 (survived)",
                          "    survived: dashboard.a.x_g__mutmut_1 (no tests)"]
    assert lines[3].startswith("dashboard.b: 1/2 killed (50.0 %)")
    assert lines[4] == "    survived: dashboard.b.x_h__mutmut_1 (segfault)"
    assert lines[-1] == "TOTAL: 3/6 killed (50.0 %)"
