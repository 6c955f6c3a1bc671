"""The app's side of issue 13: names shown literally, images verified before any cache is filled, the
start-up check that keeps an unauthenticated server off the network."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from dashboard.data.store import Store
from dashboard.imaging import ImageChangedError
from dashboard.settings import PROJECT_ROOT, load_settings
from dashboard.study import accounts
from dashboard.testing import app_data
from dashboard.ui import serve, state
from dashboard.ui.context import build_context, load_model
from dashboard.ui.incidents import Incident, incidents, user_message
from dashboard.ui.screens import label as lb
from dashboard.ui.screens import report as rp
from dashboard.ui.text import escape_markdown
from dashboard.ui.types import PatchRef
from dashboard.ui.work import concepts as cx
from dashboard.ui.work import images
from tests.ui.test_pages import app_ctx, data, model_data, run_page  # noqa: F401 - fixtures

MARKDOWN_NAME = "**Dr** [x](https://evil.example/p) :red[alarm] `c` <b>b</b> $x^2$"


def test_markdown_in_a_reader_name_shows_literally_on_the_report(model_data):  # noqa: F811
    ctx = app_ctx(model_data["settings"])
    cx.compute_stats(ctx, 120)
    view = lb.load_patch(ctx, PatchRef("SYN-0001-LCC", 20, 70, 64))
    rec = json.loads((PROJECT_ROOT / "tests/fixtures/fabric/polygon_448.json").read_text())
    m = lb.match(ctx, view, lb.drawings_from_canvas(view, rec["json"], rec["fit"]))
    lb.save(ctx, view, m, "mass", MARKDOWN_NAME)
    rp.retrain(ctx, MARKDOWN_NAME)
    at = run_page("pages/report.py", {state.CASE_ID: "SYN-0001", state.IMAGE_ID: "SYN-0001-LCC"})
    assert [t.value for t in at.text] == [f"Readers: {MARKDOWN_NAME}"]  # st.text: no markdown at all
    rendered = [e.value for e in (*at.markdown, *at.caption, *at.success, *at.info, *at.warning)]
    assert not any("evil.example" in v or ":red[" in v for v in rendered), rendered


def test_escape_markdown_leaves_nothing_for_markdown_to_read():
    out = escape_markdown("# **Dr** [x](javascript:go) :red[y] <b> $z$ `c`\nnext")
    assert out == r"\# \*\*Dr\*\* \[x\](javascript\:go) \:red\[y\] \<b\> \$z\$ \`c\` next"
    assert escape_markdown("R MLO · SYN-0001") == "R MLO · SYN-0001"


def test_a_changed_file_never_reaches_the_image_caches(settings):
    store = Store(settings.db_path, settings.journal_dir)
    app_data.populate(settings, store)
    ctx = build_context(settings, store, load_model("no-such-card", settings.user_cards_dir, "cpu"))
    row = store.get_image("SYN-0001-LCC")
    first = images.load_mammogram(ctx, row)
    assert images.load_mammogram(ctx, row) is first  # cached under the stored SHA-256
    other = store.resolve_path(store.get_image("SYN-0001-RCC")["rel_path"]).read_bytes()
    store.resolve_path(row["rel_path"]).write_bytes(other)  # replaced by the other breast
    with pytest.raises(ImageChangedError, match="changed after it was ingested"):
        images.load_mammogram(ctx, row)
    fresh = build_context(settings, store, load_model("no-such-card", settings.user_cards_dir, "cpu"))
    with pytest.raises(ImageChangedError):
        images.model_image(fresh, row)  # a cold cache is not filled with the new pixels either
    assert len(fresh.caches.mammograms) == 0 and len(fresh.caches.model_images) == 0
    store.close()


def _serve(args, env_extra, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONCEPTLENS_")}
    env.update(CONCEPTLENS_DATA_DIR=str(tmp_path / "data"), **env_extra)
    return subprocess.run([sys.executable, "-m", "dashboard.ui.serve", *args], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=180)


def test_a_server_on_every_interface_without_sign_in_refuses_to_start(tmp_path):
    proc = _serve(["--address", "0.0.0.0", "--port", "8599"], {}, tmp_path)
    assert proc.returncode == 2
    assert "Refusing to serve ConceptLens on 0.0.0.0" in proc.stderr and "CONCEPTLENS_REQUIRE_SIGN_IN" in proc.stderr
    assert "8599" not in proc.stdout  # no server was started


def test_sign_in_without_a_coordinator_refuses_and_with_one_passes(tmp_path, monkeypatch):
    on = {"CONCEPTLENS_REQUIRE_SIGN_IN": "1"}
    proc = _serve(["--check", "--address", "192.168.1.20"], on, tmp_path)
    assert proc.returncode == 2 and "no active coordinator" in proc.stderr
    monkeypatch.setenv("CONCEPTLENS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("CONCEPTLENS_DB_PATH", raising=False)
    s = load_settings()
    with Store(s.db_path, s.journal_dir) as store:
        accounts.create_user(store, "coord", "coordinator", actor="test", password="a long password")
    proc = _serve(["--check", "--address", "192.168.1.20"], on, tmp_path)
    assert proc.returncode == 0 and "with sign-in" in proc.stdout, proc.stderr
    proc = _serve(["--check", "--address", "0.0.0.0"], {}, tmp_path)
    assert proc.returncode == 2  # the account alone is not enough: sign-in must be on


@pytest.mark.parametrize("address, local", [("127.0.0.1", True), ("127.0.1.1", True), ("::1", True),
                                            ("[::1]", True), ("localhost", True), ("0.0.0.0", False),
                                            ("", False), ("10.0.0.5", False), ("pacs-viewer.example", False)])
def test_loopback_addresses(address, local):
    assert serve.is_loopback(address) is local


def test_the_loopback_default_starts_without_sign_in(tmp_path):
    proc = _serve(["--check"], {}, tmp_path)
    assert proc.returncode == 0 and "this machine only" in proc.stdout


def test_an_unexpected_error_becomes_an_incident_id_and_a_logged_traceback(caplog):
    with pytest.raises(Incident) as info:
        with incidents("ingesting uploads"):
            raise KeyError("/srv/data/SMITH_JOHN/secret.dcm")
    msg = str(info.value)
    assert "while ingesting uploads" in msg and "incident" in msg and "SMITH_JOHN" not in msg
    incident = msg.split("incident ")[1].split(";")[0]
    assert any(incident in r.getMessage() and r.exc_info for r in caplog.records)
    assert user_message(Incident("shown as is")) == "shown as is"
