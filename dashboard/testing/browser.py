"""Real-browser plumbing shared by the e2e tests and bench/bench_browser.py.

``streamlit_server`` starts ``streamlit run <app>`` on a free port as a subprocess and waits for
``/_stcore/health``; ``launch_chromium`` starts Debian's chromium through Playwright (sync API).
Like streamlit-drawable-canvas's own e2e tests: no timed assertions, only waits for a state.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("CONCEPTLENS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--headless=new", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def chromium_available() -> bool:
    return Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is not None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def streamlit_server(app: Path | str, env: dict[str, str], *, startup_s: float = 180.0,
                     log_path: Path | None = None) -> Iterator[str]:
    """Run ``streamlit run app`` headless on a free port; yield its base URL; stop it afterwards."""
    port = free_port()
    log_path = log_path or ARTIFACTS / f"streamlit-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # no background warm-up unless the caller asks for it (CONCEPTLENS_WARMUP=1): flows start from known data
    full_env = {**os.environ, "CONCEPTLENS_WARMUP": "0", **env, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "streamlit", "run", str(app), "--server.headless", "true",
           "--server.port", str(port), "--server.address", "127.0.0.1",
           "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + startup_s
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"streamlit exited with {proc.returncode}; see {log_path}:\n"
                                       + log_path.read_text(errors="replace")[-3000:])
                try:
                    with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"streamlit did not become healthy in {startup_s:.0f} s; see {log_path}")
                time.sleep(0.3)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextmanager
def launch_chromium(playwright):
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
    try:
        yield browser
    finally:
        browser.close()


@contextmanager
def app_page(app: Path | str, env: dict[str, str], *, log_path: Path | None = None,
             timeout_ms: int = 240_000) -> Iterator:
    """``streamlit run app`` and a chromium page on it, already at the app's URL (Playwright sync API)."""
    from playwright.sync_api import sync_playwright  # optional: the browser extra (tests/e2e, bench)

    with streamlit_server(app, env, log_path=log_path) as url, sync_playwright() as pw, launch_chromium(pw) as browser:
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.set_default_timeout(timeout_ms)
        page.goto(url)
        try:
            yield page
        finally:
            page.close()
