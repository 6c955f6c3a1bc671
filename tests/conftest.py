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
