"""Real-browser fixtures: a prepared data dir, `streamlit run app.py` on a free port, chromium."""
from __future__ import annotations

import os

import pytest

from dashboard.testing.browser import ARTIFACTS, ROOT, chromium_available, launch_chromium, streamlit_server


@pytest.fixture(scope="session")
def artifacts():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="module")
def browser():
    if not chromium_available():
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI (/usr/bin/chromium)")
        pytest.skip("chromium not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw, launch_chromium(pw) as b:
        yield b


def server_env(data_dir, card: str) -> dict[str, str]:
    return {"CONCEPTLENS_DATA_DIR": str(data_dir), "CONCEPTLENS_MODEL_CARD": card, "CONCEPTLENS_DEVICE": "cpu",
            "CONCEPTLENS_DB_PATH": str(data_dir / "conceptlens.duckdb")}


__all__ = ["ROOT", "server_env", "streamlit_server"]
