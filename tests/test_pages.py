"""Every page through streamlit's AppTest, started at app.py against a small real store."""
from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from dashboard import context as context_mod
from dashboard import state
from dashboard.settings import PROJECT_ROOT
from dashboard.store import Store
from tests import app_data

APP = str(PROJECT_ROOT / "app.py")
TIMEOUT = 120


@pytest.fixture
def data(settings):
    """A real store in tmp_path with three cases; the AppTest process reads it through the env."""
    store = Store(settings.db_path, settings.journal_dir)
    ids = app_data.populate(settings, store)
    loaded = context_mod.load_model(settings.model_card, settings.user_cards_dir, "cpu")
    store.close()  # the app opens its own connection (one writer per file)
    return {"settings": settings, "image_ids": ids, "weights_sha": loaded.weights_sha}


def run_page(page: str, session: dict | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for k, v in (session or {}).items():
        at.session_state[k] = v
    at.run()
    if page != "pages/worklist.py":
        at.switch_page(page)
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def store_of(at_settings) -> Store:
    from dashboard import resources

    return resources.get_store(at_settings)


def test_worklist_lists_cases_with_scores_and_label_status(data):
    settings = data["settings"]
    s = store_of(settings)
    app_data.score(s, settings.model_card, data["weights_sha"],
                   {"SYN-0001-LCC": 0.91, "SYN-0001-RCC": 0.2, "SYN-0002-RCC": 0.1, "SYN-0002-LCC": 0.05})
    at = run_page("pages/worklist.py")
    df = at.dataframe[0].value
    assert list(df["case_id"]) == ["SYN-0001", "SYN-0002", "MIAS-mdb001"]  # by score, unscored last
    row = df.set_index("case_id").loc["SYN-0001"]
    assert row["probability"] == pytest.approx(0.91)
    assert row["prediction"] == "lesion"
    assert row["scored"] == "2/4"
    assert df.set_index("case_id").loc["SYN-0002", "prediction"] == "normal"
    assert df.set_index("case_id").loc["MIAS-mdb001", "kind"] == "real"
    assert df.set_index("case_id").loc["MIAS-mdb001", "status"] == "unlabeled"
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Cases"] == "3" and metrics["Not scored"] == "2"  # SYN-0001 half scored, MIAS none


def test_worklist_filters_and_opens_a_case(data):
    at = run_page("pages/worklist.py")
    at.multiselect(key="worklist.kinds").select("real").run()
    assert list(at.dataframe[0].value["case_id"]) == ["MIAS-mdb001"]
    at.multiselect(key="worklist.kinds").unselect("real").run()
    at.text_input(key="worklist.search").input("fibroglandular").run()
    assert list(at.dataframe[0].value["case_id"]) == ["SYN-0002"]
    at.text_input(key="worklist.search").input("nothing like this").run()
    assert not at.dataframe and "No case matches" in at.info[0].value
    at.text_input(key="worklist.search").input("").run()
    at.selectbox(key="worklist.sort").select("case").run()
    at.toggle(key="worklist.descending").set_value(False).run()
    assert list(at.dataframe[0].value["case_id"]) == ["MIAS-mdb001", "SYN-0001", "SYN-0002"]
    at.selectbox(key="worklist.case").select("SYN-0002").run()
    at.button(key="worklist.open").click().run()
    assert at.session_state[state.CASE_ID] == "SYN-0002"


def test_worklist_on_an_empty_store_says_what_to_do(settings):
    at = run_page("pages/worklist.py")
    assert "no cases yet" in at.info[0].value
