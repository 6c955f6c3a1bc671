"""Shared fixtures: real DuckDB files in tmp_path, settings pointing there, the shared data folder."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from dashboard.data.store import Store
from dashboard.settings import PROJECT_ROOT, load_settings


@pytest.fixture
def settings(tmp_path, monkeypatch):
    """Settings whose data directory is a fresh tmp folder."""
    monkeypatch.setenv("CONCEPTLENS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("CONCEPTLENS_DB_PATH", raising=False)
    monkeypatch.setenv("CONCEPTLENS_WARMUP", "0")  # no background warm-up thread in page tests (tests/ui/test_warmup)
    return load_settings()


@pytest.fixture
def store(settings):
    s = Store(settings.db_path, settings.journal_dir)
    yield s
    s.close()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data sets beside the project (../shared/data). Required in CI, skipped elsewhere."""
    path = Path(os.environ.get("CONCEPTLENS_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data"))
    if not path.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"shared data folder missing in CI: {path}")
        pytest.skip(f"no shared data at {path}")
    return path


@pytest.fixture(scope="session")
def ray_lib():
    """The ``ray`` module (requirements-scale.txt). Required in CI, skipped elsewhere."""
    try:
        import ray  # optional: the scale path's tests only
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("ray is not installed in CI: make test installs requirements-scale.txt")
        pytest.skip("ray is not installed (pip install -r requirements-scale.txt)")
    return ray


@pytest.fixture(scope="module")
def local_ray(ray_lib):
    """One local Ray for a test module: 2 CPUs, no dashboard, a 200 MB object store; shut down after."""
    ray_lib.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024 * 1024, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(PROJECT_ROOT)}})
    yield ray_lib
    ray_lib.shutdown()
