"""The pilot study in the app, through streamlit's AppTest started at app.py: sign-in and the
navigation each role gets, blinding on every page a reader can reach, the reading page's timed
submit and correction, study drawings, the pinned probe, the questionnaire and the coordinator
pages. A real store in tmp_path, real DICOM files, a tiny real timm model and a real probe."""
from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from argon2 import PasswordHasher
from streamlit.runtime.pages_manager import PagesManager
from streamlit.testing.v1 import AppTest
from streamlit.util import calc_hash

from dashboard.data.store import DrawingRecord, FindingRecord, Store
from dashboard.engine.dissection import mask_to_png
from dashboard.settings import PROJECT_ROOT
from dashboard.study import Arm, CaseSelection, StudyDefinition, accounts, create_study, create_user, load_study
from dashboard.study import reading as rdg
from dashboard.testing import app_data
from dashboard.ui import access, resources, state
from dashboard.ui import context as context_mod
from dashboard.ui.screens import study_read as sr
from dashboard.ui.work import probe_versions

APP = str(PROJECT_ROOT / "app.py")
TIMEOUT = 180
PASSWORD = "correct horse battery"
#: What the store knows about each case and the readers must not see: label, finding pathology, description.
PATHOLOGY = {"SYN-0001": "malignant", "SYN-0002": "normal", "MIAS-mdb001": "benign"}


class Navigation:
    """How Streamlit picks the script of a run. A running server runs app.py (and so its
    ``st.navigation``) on every run once any run has called st.navigation; before that, like
    AppTest on every run (it resets Streamlit's "pages directory" flag), it runs a requested
    ``pages/`` file directly. ``direct = False`` gives the server's usual behaviour."""

    def __init__(self):
        self.direct = False


@pytest.fixture(autouse=True)
def navigation_mode(monkeypatch):
    nav = Navigation()
    original = PagesManager.__init__

    def init(self, *args, **kw):
        original(self, *args, **kw)
        if not nav.direct:
            PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", init)
    return nav


@pytest.fixture(autouse=True)
def cheap_argon2(monkeypatch):
    """argon2id with small costs (the app runs in this process under AppTest, so it uses it too)."""
    monkeypatch.setattr(accounts, "_HASHER", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


def app_ctx(settings):
    return context_mod.build_context(settings, resources.get_store(settings),
                                     context_mod.load_model(settings.model_card, settings.user_cards_dir, "cpu"),
                                     resources.get_caches())


def train_probe(ctx, image_id: str = "SYN-0001-LCC") -> int:
    """A real concept probe of the tiny model, trained on one drawing of a mass."""
    m = np.zeros((64, 64), bool)
    m[20:44, 20:44] = True
    ctx.store.save_annotation(DrawingRecord(image_id=image_id, concept="mass", reader="Dr Demo", patch_x0=20, patch_y0=70,
                              patch_size=64, shape="rect", geometry={"x0": 20, "y0": 20, "x1": 44, "y1": 44},
                              mask_png=mask_to_png(m), model_card=ctx.card_name))
    return probe_versions.retrain(ctx, "Dr Demo").version


@pytest.fixture
def study(settings, monkeypatch):
    """Three cases (with findings whose pathology is stored), the tiny model, a probe, a coordinator,
    two readers and a two-arm study of both readers over the three cases (washout 0)."""
    app_data.make_tiny_card(settings)
    monkeypatch.setenv("CONCEPTLENS_MODEL_CARD", app_data.TINY_CARD)
    settings = settings.with_overrides(model_card=app_data.TINY_CARD)
    with Store(settings.db_path, settings.journal_dir) as s:
        app_data.populate(settings, s)
        for case_id, pathology in PATHOLOGY.items():
            image_id = s.list_images(case_id=case_id)[0]["image_id"]
            s.save_finding(FindingRecord(f"{case_id}-f", image_id, "mass", pathology=pathology, bbox=(10, 10, 40, 40)))
    ctx = app_ctx(settings)
    store = ctx.store
    version = train_probe(ctx)
    create_user(store, "coord", "coordinator", actor="test", password=PASSWORD)
    for r in ("reader1", "reader2", "reader3"):
        create_user(store, r, "reader", actor="test", password=PASSWORD)
    defn = StudyDefinition(
        name="pilot", title="Pilot study", readers=("reader1", "reader2"),
        cases=CaseSelection(ids=tuple(PATHOLOGY)), seed=3, washout_days=0.0,
        arms=(Arm("score", "AI score only", ("score",)),
              Arm("concepts", "AI score + attribution + concept report", ("score", "attribution", "concept_report"),
                  probe="latest")))
    st = create_study(store, defn, actor="coord", settings=settings)
    assert st.probes["concepts"] == version
    return {"settings": settings, "store": store, "ctx": ctx, "study": st, "probe": version}


# ---------------------------------------------------------------- helpers
def new_app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    return at


def sign_in(at: AppTest, username: str, password: str = PASSWORD) -> AppTest:
    if not any(t.value == "Sign in" for t in at.title):
        at.switch_page("pages/sign_in.py").run()
    at.text_input(key="sign_in.username").input(username)
    at.text_input(key="sign_in.password").input(password)
    at.button(key="sign_in.submit").click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def signed_in(username: str) -> AppTest:
    return sign_in(new_app(), username)


def texts(at: AppTest) -> str:
    """Every rendered element of the run (main and sidebar) as its protobuf text: labels, values,
    options, help, captions, table cells (the Arrow bytes carry the strings), metric values."""
    out = []

    def walk(node):
        proto = getattr(node, "proto", None)
        if proto is not None:
            out.append(str(proto))
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)
    return "\n".join(out)


def leaks(at: AppTest, case_id: str, store) -> list[str]:
    """The case's truth label, its findings' pathology and its description wherever they show."""
    case = store.get_case(case_id)
    words = {case["label"]} | {f["pathology"] for img in store.list_images(case_id=case_id)
                               for f in store.list_findings(img["image_id"])}
    text = texts(at)
    found = [w for w in sorted(words) if re.search(rf"\b{re.escape(w)}\b", text, re.IGNORECASE)]
    if case["description"] and case["description"].lower() in text.lower():
        found.append(case["description"])
    return found


def request_page(at: AppTest, path: str) -> AppTest:
    """Ask for a page, as a click in the navigation or a typed URL would: a page outside the
    session's navigation is requested by the hash its st.Page has (``AppTest.switch_page`` refuses
    those), and Streamlit must then run the default page instead."""
    try:
        at.switch_page(path)
    except ValueError:
        at._page_hash = calc_hash(Path(path).stem)  # st.Page's script hash: its url path
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def titles(at: AppTest) -> list[str]:
    return [t.value for t in at.title]


# ---------------------------------------------------------------- sign-in and navigation
def test_navigation_by_role():
    names = lambda nav: [p.path for pages in nav.values() for p in pages]  # noqa: E731
    reader = names(access.navigation("reader"))
    assert reader == ["pages/study_read.py", "pages/study_questionnaire.py"]
    coord = names(access.navigation("coordinator"))
    assert coord[:4] == [p.path for p in access.COORDINATOR_PAGES]
    assert set(coord[4:]) == {p.path for p in access.DEMO_PAGES}
    anonymous = names(access.navigation(None))
    assert set(anonymous) == {p.path for p in access.DEMO_PAGES} | {"pages/sign_in.py"}
    assert names(access.navigation(None, require_sign_in=True)) == ["pages/sign_in.py"]
    # the default page is the first of the first section
    assert [p.path for pages in access.navigation("reader").values() for p in pages if p.default] == \
        ["pages/study_read.py"]


def test_sign_in_required_when_the_setting_says_so(study, monkeypatch, navigation_mode):
    monkeypatch.setenv("CONCEPTLENS_REQUIRE_SIGN_IN", "1")
    at = new_app()
    assert titles(at) == ["Sign in"]
    for page in [p.path for p in access.DEMO_PAGES + access.READER_PAGES + access.COORDINATOR_PAGES]:
        request_page(at, page)
        assert titles(at) == ["Sign in"], page  # nothing else runs before sign-in
    # a fresh server runs a requested page file directly (no navigation): the page itself refuses
    navigation_mode.direct = True
    for page in [p.path for p in access.DEMO_PAGES]:
        request_page(at, page)
        assert titles(at) == [] and "sign in first" in at.error[0].value, page
    for page in [p.path for p in access.READER_PAGES + access.COORDINATOR_PAGES]:
        request_page(at, page)
        assert "Please sign in first." in at.error[0].value, page
    navigation_mode.direct = False
    at.switch_page("pages/sign_in.py").run()
    at = sign_in(at, "reader1", "wrong password!")
    assert "Wrong username or password." in at.error[0].value
    assert state.AUTH_TOKEN not in at.session_state
    at = sign_in(at, "reader1")
    assert titles(at) == ["Reading"]


def test_sign_in_is_rate_limited_with_the_librarys_message(study, monkeypatch):
    monkeypatch.setenv("CONCEPTLENS_SIGNIN_MAX_FAILURES", "3")
    at = new_app()
    for _ in range(3):
        at = sign_in(at, "reader1", "not the password")
        assert "Wrong username or password." in at.error[0].value
    at = sign_in(at, "reader1")  # the right password, but locked now
    assert "Too many failed sign-ins" in at.error[0].value
    assert state.AUTH_TOKEN not in at.session_state


def test_sign_out_and_expiry_end_the_session(study):
    at = signed_in("coord")
    assert titles(at) == ["Studies"]
    assert "Signed in as **coord** (coordinator)" in at.sidebar.caption[0].value
    at.sidebar.button(key="auth.sign_out").click().run()
    assert state.AUTH_TOKEN not in at.session_state
    assert titles(at) in (["Worklist"], ["Sign in"])  # anonymous: the demo and Sign in again
    request_page(at, "pages/coordinator_studies.py")
    assert titles(at) == ["Worklist"]  # a coordinator page is out of reach now
    # a session the server no longer accepts (deactivated account) ends at the next run
    at = signed_in("reader1")
    accounts.set_active(study["store"], "reader1", False, actor="coord")
    at.run()
    assert state.AUTH_TOKEN not in at.session_state
    if titles(at) != ["Sign in"]:
        at.switch_page("pages/sign_in.py").run()
    assert "Sign in again" in at.info[0].value  # the library's reason, once
    request_page(at, "pages/study_read.py")
    assert titles(at) == ["Worklist"]


def test_a_sign_in_expires_after_the_librarys_session_time(study, monkeypatch):
    import time

    monkeypatch.setenv("CONCEPTLENS_STUDY_SESSION_HOURS", str(1.0 / 3600))  # one second
    at = signed_in("reader1")
    assert titles(at) == ["Reading"]
    assert state.AUTH_TOKEN in at.session_state
    assert "sign_in.password" not in at.session_state or not at.session_state["sign_in.password"]
    time.sleep(1.5)
    at.run()
    assert state.AUTH_TOKEN not in at.session_state
    if titles(at) != ["Sign in"]:
        at.switch_page("pages/sign_in.py").run()
    assert "Your sign-in expired at" in at.info[0].value


def test_the_free_reader_name_is_marked_unauthenticated_and_shown_literally(study):
    name = "**Dr Bold** [click](http://evil.example) <b>x</b>"
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state[state.READER] = name
    at.run()
    assert not at.exception
    assert any("unauthenticated" in m.value for m in at.sidebar.markdown)  # the badge
    (shown,) = [t.value for t in at.sidebar.text]
    assert shown == f"Reader name: {name}"  # st.text: no markdown, no HTML
    assert access.literal("**x**") == r"\*\*x\*\*"


# ---------------------------------------------------------------- blinding
def read_through(at: AppTest, store, reader: str, check) -> int:
    """Answer and submit every case of the reader through the page, calling ``check(at, case_id)``
    on each case and the questionnaire between sessions. Returns the number of cases read."""
    n = 0
    for _ in range(20):
        step = rdg.next_assignment(store, "pilot", reader)
        if step.state == "questionnaire":
            at.switch_page("pages/study_questionnaire.py").run()
            check(at, None)
            key = f"study_q.pilot.{step.session_index}"
            for i in range(10):
                at.radio(key=f"{key}.sus{i}").set_value(4 if i % 2 == 0 else 2)
            for i in range(3):
                at.radio(key=f"{key}.trust{i}").set_value(3)
            at.button(key=f"{key}.submit").click().run()
            assert not at.error, [e.value for e in at.error]
            at.switch_page("pages/study_read.py").run()
            continue
        if step.state != "read":
            return n
        assert titles(at) == ["Reading"]
        check(at, step.assignment.case_id)
        read_id = [r for r in store.list_reads("pilot", reader) if r["submitted_at"] is None][0]["read_id"]
        at.radio(key=f"study_read.birads.{read_id}").set_value(4)
        at.number_input(key=f"study_read.malignancy.{read_id}").set_value(70.0)
        at.radio(key=f"study_read.confidence.{read_id}").set_value(3)
        if rdg.read_form(store, step.assignment.assignment_id).helpfulness:
            at.radio(key=f"study_read.helpfulness.{read_id}").set_value(4)
        at.button(key=f"study_read.submit.{read_id}").click().run()
        assert not at.exception and not at.error, [e.value for e in at.error]
        n += 1
    raise AssertionError("the reader never finished")


def test_no_page_a_reader_can_reach_shows_truth_pathology_or_description(study, navigation_mode):
    store = study["store"]
    # the search finds what it looks for: the demo's Read page shows the case unblinded
    demo = new_app()
    demo.session_state[state.CASE_ID] = "SYN-0001"
    demo.switch_page("pages/read.py").run()
    assert leaks(demo, "SYN-0001", store) == ["malignant", PROJECT_CASE_DESCRIPTION]

    at = signed_in("reader1")
    every_page = [p.path for p in access.DEMO_PAGES + access.COORDINATOR_PAGES + access.READER_PAGES] + \
        ["pages/sign_in.py"]
    seen_titles = set()
    # a fresh server runs a requested page file directly: each page refuses a reader by itself
    navigation_mode.direct = True
    for page in every_page:
        request_page(at, page)
        assert leaks(at, rdg.next_assignment(store, "pilot", "reader1").assignment.case_id, store) == [], page
        if page in [p.path for p in access.DEMO_PAGES + access.COORDINATOR_PAGES]:
            assert "is a reader" in at.error[0].value or "needs a coordinator account" in at.error[0].value, page
            assert not at.dataframe and not at.get("imgs"), page
    navigation_mode.direct = False
    at.switch_page("pages/study_read.py").run()

    def check(at, case_id):
        cases = [case_id] if case_id else list(PATHOLOGY)
        for page in every_page:  # every page, the reader's and those outside their navigation
            request_page(at, page)
            seen_titles.update(titles(at))
            for c in cases:
                assert leaks(at, c, store) == [], (page, c)
        at.switch_page("pages/study_read.py" if case_id else "pages/study_questionnaire.py").run()

    n = read_through(at, store, "reader1", check)
    assert n == 6  # three cases in each of two arms
    assert seen_titles == {"Reading", "End-of-session questionnaire"}  # only the reader's pages ever ran
    assert rdg.next_assignment(store, "pilot", "reader1").state == "complete"


PROJECT_CASE_DESCRIPTION = app_data.CASES[0][3]


# ---------------------------------------------------------------- the reader's own assignments
def first_open_read(store, reader: str, study_name: str = "pilot") -> dict:
    (r,) = [r for r in store.list_reads(study_name, reader) if r["submitted_at"] is None]
    return r


def test_a_reader_sees_only_their_own_assignments(study, settings):
    store = study["store"]
    other = StudyDefinition(name="other", title="Other study", readers=("reader2",),
                            cases=CaseSelection(ids=("SYN-0002",)), arms=(Arm("score", "AI score", ("score",)),))
    create_study(store, other, actor="coord", settings=study["settings"])
    at = signed_in("reader1")
    assert titles(at) == ["Reading"]
    assert not [s for s in at.selectbox if s.key == state.STUDY_NAME]  # one study: no choice offered
    assert at.caption[0].value.startswith("Pilot study")
    step = rdg.next_assignment(store, "pilot", "reader1")
    opened = first_open_read(store, "reader1")
    assert opened["assignment_id"] == step.assignment.assignment_id  # the page opened reader1's own next case
    assert store.list_reads("pilot", "reader2") == [] and store.list_reads("other") == []
    # the browser closed and opened again: the same case resumes, its first-render time kept
    again = signed_in("reader1")
    assert first_open_read(store, "reader1") == opened
    assert len(store.list_reads("pilot", "reader1")) == 1
    assert again.subheader[0].value.startswith(f"Case {step.assignment.position + 1} of 3")
    # reader2 is in both studies and picks one; reader3 is in none
    at2 = signed_in("reader2")
    assert at2.selectbox(key=state.STUDY_NAME).options == ["Pilot study", "Other study"]  # shown by title
    at2.selectbox(key=state.STUDY_NAME).set_value("other").run()
    assert at2.caption[0].value.startswith("Other study")
    assert first_open_read(store, "reader2", "other")["case_id"] == "SYN-0002"
    at3 = signed_in("reader3")
    assert "You have no cases to read yet." in at3.info[0].value
    # another reader's case cannot be opened, whatever the page asks
    with pytest.raises(rdg.ReadingError, match="assigned to another reader"):
        rdg.open_read(store, rdg.next_assignment(store, "pilot", "reader2").assignment.assignment_id, "reader1")


# ---------------------------------------------------------------- the pinned probe
def concept_rows(at):
    return next(d.value for d in at.dataframe if "attribution share" in d.value.columns)


def test_the_pinned_probe_is_unchanged_after_another_readers_save(study):
    from dashboard.ui import canvas
    from dashboard.ui.screens import label as lb
    from dashboard.ui.types import PatchRef
    from dashboard.ui.work import concepts as cx

    store, settings = study["store"], study["settings"]
    at = signed_in("reader1")
    step = rdg.next_assignment(store, "pilot", "reader1")
    assert step.arm == "concepts"  # the seed puts reader1's concept-report session first
    assert any("Concept probe v1, fixed for this study." in c.value for c in at.caption)
    before = concept_rows(at)
    legend_before = next(d.value for d in at.dataframe if "area_%" in d.value.columns)
    # another reader labels on the Label page: Save with retrain-on-save trains probe v2
    ctx = app_ctx(settings)
    cx.compute_stats(ctx, 120)
    view = lb.load_patch(ctx, PatchRef("SYN-0002-RCC", 30, 80, 64))
    d = canvas.Drawing("rect", ((2, 2), (40, 2), (40, 40), (2, 40)))
    res = lb.save(ctx, view, lb.match(ctx, view, [d]), "mass", "coord", retrain=True)
    assert res.retrain_error is None and res.probe_version == 2
    assert probe_versions.probe_info(ctx).version == 2  # the Report page now shows v2
    at.run()
    assert any("Concept probe v1, fixed for this study." in c.value for c in at.caption)
    assert concept_rows(at).equals(before)
    assert next(d.value for d in at.dataframe if "area_%" in d.value.columns).equals(legend_before)
    assert load_study(store, "pilot").probes["concepts"] == 1


# ---------------------------------------------------------------- reading: events, location, drawing, correction
def test_reading_records_events_location_drawing_and_a_correction(study):
    import json

    store, settings = study["store"], study["settings"]
    at = signed_in("reader1")
    read = first_open_read(store, "reader1")
    rid = read["read_id"]
    at.radio(key="study_read.mode").set_value("auto").run()
    at.radio(key="study_read.overlay").set_value("attribution").run()
    events = store.list_read_events("pilot")
    assert [(e["kind"], e["payload"].get("mode") or e["payload"].get("overlay")) for e in events] == \
        [("window_level", "auto"), ("overlay_toggle", "attribution")]
    assert all(e["read_id"] == rid for e in events)
    # the location click (what the image component reports, converted to model pixels by the screen)
    image_id = store.list_images(case_id=read["case_id"])[0]["image_id"]
    at.session_state[state.STUDY_CLICK] = (rid, image_id, 32.0, 96.0)
    at.run()
    assert any("Most suspicious location:" in c.value and "(32, 96) model px" in c.value for c in at.caption)
    # a drawing around it, saved as the page's Save does
    ctx = app_ctx(settings)
    vis = rdg.visible_fields(store, read["assignment_id"])
    ctx = resources.build_context(settings, store, context_mod.load_model(vis.model_card, settings.user_cards_dir,
                                                                           "cpu"), resources.get_caches()) \
        if ctx.card_name != vis.model_card else ctx
    patch = sr.drawing_patch(ctx, (image_id, 32.0, 96.0))
    assert patch.view.ref.size == 64 and "mass" in patch.concepts
    rec = json.loads((PROJECT_ROOT / "tests/fixtures/fabric/polygon_448.json").read_text())
    n_probes, labels = len(store.list_probes()), store.list_unit_labels(ctx.card_name, "layer4")
    ann_id = sr.save_study_drawing(ctx, rid, "reader1", patch, "mass", rec["json"], rec["fit"])
    (ann,) = store.list_study_annotations("pilot")
    assert (ann["annotation_id"], ann["reader"], ann["study"], ann["arm"]) == (ann_id, "reader1", "pilot", "concepts")
    assert store.get_read(rid)["first_drawing_at"] is not None
    assert len(store.list_probes()) == n_probes and store.list_unit_labels(ctx.card_name, "layer4") == labels
    at.run()
    mine = next(d.value for d in at.dataframe if "shape" in d.value.columns)
    assert mine["concept"].tolist() == ["mass"]
    # submit with the location; then correct it
    at.radio(key=f"study_read.birads.{rid}").set_value(5)
    at.number_input(key=f"study_read.malignancy.{rid}").set_value(90.0)
    at.radio(key=f"study_read.confidence.{rid}").set_value(4)
    at.radio(key=f"study_read.helpfulness.{rid}").set_value(2)
    at.text_area(key=f"study_read.comment.{rid}").input("**spiculated** <b>mass</b>")
    at.button(key=f"study_read.submit.{rid}").click().run()
    assert "Case 1 of 3 submitted." in at.success[0].value
    row = store.get_read(rid)
    assert (row["birads"], row["malignancy"], row["click_image_id"], row["click_x"], row["click_y"]) == \
        (5, 90.0, image_id, 32.0, 96.0)
    assert row["submitted_at"] > row["opened_at"]
    at.radio(key=f"study_read.c_birads.{rid}").set_value(3)
    at.number_input(key=f"study_read.c_malignancy.{rid}").set_value(20.0)
    at.radio(key=f"study_read.c_confidence.{rid}").set_value(4)
    at.radio(key=f"study_read.c_helpfulness.{rid}").set_value(2)
    at.button(key=f"study_read.c_submit.{rid}").click().run()
    assert "A correction needs a reason" in at.error[0].value
    at.text_input(key=f"study_read.c_reason.{rid}").input("wrong category")
    at.button(key=f"study_read.c_submit.{rid}").click().run()
    assert "Your correction was saved" in at.success[0].value
    (new,) = [r for r in store.list_reads("pilot", "reader1") if r["supersedes"] == rid]
    assert (new["birads"], new["malignancy"], new["click_image_id"]) == (3, 20.0, image_id)
    assert store.get_read(rid)["birads"] == 5  # the original stays as it was


def test_clicks_on_a_mirrored_tile_map_to_model_pixels():
    tile = sr.StudyTile("img", "R CC", np.zeros((100, 80, 3), np.uint8), True, (100, 80), (0, 0, ""), [])
    # shown at half size: (10, 20) shown px -> (20, 40) display px -> x mirrored: 80 - 20 = 60
    assert sr.clicked_location(tile, {"x": 10, "y": 20, "width": 40, "height": 50, "unix_time": 1}) == \
        ("img", 60.0, 40.0)
    left = sr.StudyTile("img2", "L CC", np.zeros((100, 80, 3), np.uint8), False, (100, 80), (0, 0, ""), [])
    values = [{"x": 10, "y": 20, "width": 40, "height": 50, "unix_time": 5},
              {"x": 4, "y": 4, "width": 40, "height": 50, "unix_time": 9}]
    assert sr.latest_click([tile, left], values) == (9.0, ("img2", 8.0, 8.0))
    assert sr.latest_click([tile, left], values, after=9.0) is None
    assert sr.latest_click([tile, left], [None, None]) is None


# ---------------------------------------------------------------- questionnaire and washout
def test_questionnaire_then_the_washout_date(study):
    store = study["store"]
    defn = StudyDefinition(name="washed", title="Washout study", readers=("reader3",),
                           cases=CaseSelection(ids=("SYN-0001", "SYN-0002")), seed=1, washout_days=14.0,
                           arms=(Arm("score", "AI score", ("score",)), Arm("unaided", "No AI", ())))
    create_study(store, defn, actor="coord", settings=study["settings"])
    step = rdg.next_assignment(store, "washed", "reader3")
    while step.state == "read":
        rid = rdg.open_read(store, step.assignment.assignment_id, "reader3")
        rdg.submit_read(store, rid, "reader3", rdg.ReadAnswers(birads=2, malignancy=5.0, confidence=4))
        step = rdg.next_assignment(store, "washed", "reader3")
    at = signed_in("reader3")
    assert "end-of-session questionnaire" in at.info[0].value
    at.switch_page("pages/study_questionnaire.py").run()
    key = "study_q.washed.0"
    at.button(key=f"{key}.submit").click().run()
    assert "Please answer every usability statement: 1, 2, 3" in at.error[0].value
    for i in range(10):
        at.radio(key=f"{key}.sus{i}").set_value(5 if i % 2 == 0 else 1)
    at.button(key=f"{key}.submit").click().run()
    assert "Please answer" in at.error[0].value and "I trusted the AI score." in at.error[0].value
    for i in range(3):
        at.radio(key=f"{key}.trust{i}").set_value(4)
    at.button(key=f"{key}.submit").click().run()
    assert not at.error
    (q,) = store.list_questionnaires("washed")
    assert q["sus_score"] == 100.0 and q["trust_items"]["I trusted the AI score."] == 4
    last = max(r["submitted_at"] for r in store.list_reads("washed", "reader3"))
    opens = last + timedelta(days=14)
    assert f"Your next session opens on {opens:%A %-d %B %Y, %H:%M} UTC" in at.success[0].value
    at.switch_page("pages/study_read.py").run()
    assert f"{opens:%A %-d %B %Y, %H:%M} UTC" in at.info[0].value


# ---------------------------------------------------------------- coordinator pages
GOOD_TOML = b'''name = "from-file"
title = "From a file"
readers = ["reader1", "newcomer"]

[cases]
ids = ["SYN-0001", "SYN-0002"]

[design]
seed = 5
washout_days = 0

[[arms]]
name = "score"
label = "AI score only"
shows = ["score"]
'''


def test_coordinator_creates_studies_from_a_file_and_a_form(study):
    store = study["store"]
    at = signed_in("coord")
    assert titles(at) == ["Studies"]
    assert frame_of(at, "study", "status")["study"].tolist() == ["pilot"]
    # a file with mistakes: the library lists each, naming its field
    bad = GOOD_TOML.replace(b'"from-file"', b'"From File"').replace(b'shows = ["score"]', b'shows = ["sore"]')
    at.file_uploader(key="coord_studies.upload").set_value(("bad.toml", bad, "application/toml")).run()
    at.button(key="coord_studies.create_file").click().run()
    err = at.error[0].value
    assert "bad.toml is not valid" in err and "name: 'From File' is not a study name" in err
    assert "arms[0] ('score').shows: 'sore' is unknown" in err
    # a good file whose reader 'newcomer' has no account: refused unless accounts are to be created
    at.file_uploader(key="coord_studies.upload").set_value(("good.toml", GOOD_TOML, "application/toml")).run()
    at.button(key="coord_studies.check").click().run()
    assert "good.toml is valid" in at.success[0].value and "newcomer" in at.info[0].value
    at.button(key="coord_studies.create_file").click().run()
    assert "These readers have no account yet: newcomer" in at.error[0].value
    at.checkbox(key="coord_studies.make_accounts").check().run()
    at.button(key="coord_studies.create_file").click().run()
    assert "Created study 'from-file': 2 readers × 2 cases × 1 arms" in at.success[0].value
    (pw,) = list(frame_of(at, "username", "password").to_dict("records"))
    assert pw["username"] == "newcomer" and accounts.sign_in(store, "newcomer", pw["password"],
                                                             settings=study["settings"]).role == "reader"
    assert load_study(store, "from-file").definition_toml == GOOD_TOML.decode()  # kept verbatim
    at.run()
    assert not [d for d in at.dataframe if "password" in d.value.columns]  # shown once
    # the form: first without readers (the library's message), then complete
    at.text_input(key="coord_studies.f_name").input("from-form")
    at.text_area(key="coord_studies.f_ids").input("SYN-0001\nMIAS-mdb001")
    at.button(key="coord_studies.f_create").click().run()
    assert "readers: at least one reader is needed" in at.error[0].value
    at.multiselect(key="coord_studies.f_readers").select("reader3")
    at.button(key="coord_studies.f_create").click().run()
    assert "Created study 'from-form'" in at.success[0].value
    st_form = load_study(store, "from-form")
    assert set(st_form.case_ids) == {"SYN-0001", "MIAS-mdb001"}
    assert st_form.probes == {"score": None, "concepts": study["probe"]}  # "latest" pinned at creation
    assert st_form.definition.washout_days == 28.0


def frame_of(at, *columns):
    for d in at.dataframe:
        if all(c in d.value.columns for c in columns):
            return d.value
    raise AssertionError(f"no table with {columns}")


def test_two_coordinators_editing_at_once_get_the_conflict_error(study):
    store = study["store"]
    create_user(store, "coord2", "coordinator", actor="test", password=PASSWORD)
    defn = StudyDefinition(name="draft", title="Draft", readers=("reader3",), cases=CaseSelection(ids=("SYN-0001",)),
                           arms=(Arm("score", "AI score", ("score",)),))
    create_study(store, defn, actor="coord", settings=study["settings"])
    a, b = signed_in("coord"), signed_in("coord2")
    for at in (a, b):
        at.selectbox(key="coord_studies.edit_pick").select("draft").run()
        assert "Editing revision 1" in next(c.value for c in at.caption if "Editing revision" in c.value)
    text = b.text_area(key="coord_studies.edit_text").value
    b.text_area(key="coord_studies.edit_text").input(text.replace('title = "Draft"', 'title = "Draft by B"')).run()
    b.button(key="coord_studies.edit_save").click().run()
    assert "Saved study 'draft' (revision 2)." in b.success[0].value
    a.text_area(key="coord_studies.edit_text").input(text.replace('title = "Draft"', 'title = "Draft by A"')).run()
    a.button(key="coord_studies.edit_save").click().run()
    assert "was changed by someone else (revision 2, you edited revision 1)" in a.error[0].value
    assert load_study(store, "draft").definition.title == "Draft by B"
    # the pilot has reads once a reader opened a case: its definition is locked
    signed_in("reader1")
    a.selectbox(key="coord_studies.edit_pick").select("pilot").run()
    assert a.button(key="coord_studies.edit_save").disabled
    a.button(key="coord_studies.edit_status").click().run()
    assert "Study 'pilot' is closed now." in a.success[0].value
    assert rdg.next_assignment(store, "pilot", "reader1").state == "closed"


def test_coordinator_creates_and_deactivates_accounts(study):
    store = study["store"]
    at = signed_in("coord")
    request_page(at, "pages/coordinator_readers.py")
    assert titles(at) == ["Readers"]
    at.text_input(key="coord_readers.username").input("Bad Name!")
    at.button(key="coord_readers.create_button").click().run()
    assert "is not a username" in at.error[0].value
    at.text_input(key="coord_readers.username").input("reader7")
    at.button(key="coord_readers.create_button").click().run()
    assert "Created reader account 'reader7'." in at.success[0].value
    password = at.code[0].value
    assert accounts.sign_in(store, "reader7", password, settings=study["settings"]).username == "reader7"
    at.run()
    assert not at.code  # shown once
    at.selectbox(key="coord_readers.pick").select("reader7").run()
    at.button(key="coord_readers.toggle").click().run()
    assert "'reader7' is deactivated." in at.success[0].value
    with pytest.raises(accounts.SignInError):
        accounts.sign_in(store, "reader7", password, settings=study["settings"])
    at.selectbox(key="coord_readers.pick").select("coord").run()
    at.button(key="coord_readers.toggle").click().run()
    assert "You cannot deactivate your own account." in at.error[0].value


def read_everything(store, reader: str) -> None:
    """Every case of ``reader`` in the pilot, with questionnaires, through the library."""
    for _ in range(20):
        step = rdg.next_assignment(store, "pilot", reader)
        if step.state == "questionnaire":
            rdg.submit_questionnaire(store, "pilot", reader, step.session_index, sus=[3] * 10,
                                     trust=dict.fromkeys(load_study(store, "pilot").definition.questionnaire.trust, 3))
        elif step.state == "read":
            a = step.assignment
            rid = rdg.open_read(store, a.assignment_id, reader)
            truth = store.get_case(a.case_id)["label"]
            p = {"malignant": 80.0, "benign": 30.0, "normal": 10.0}[truth] + (5 if reader == "reader2" else 0)
            rdg.submit_read(store, rid, reader, rdg.ReadAnswers(
                birads=5 if truth == "malignant" else 2, malignancy=p, confidence=3,
                helpfulness=4 if rdg.read_form(store, a.assignment_id).helpfulness else None))
        else:
            return


def test_results_progress_export_and_audit(study):
    import io
    import zipfile

    import pandas as pd

    store = study["store"]
    for r in ("reader1", "reader2"):
        read_everything(store, r)
    at = signed_in("coord")
    request_page(at, "pages/coordinator_results.py")
    progress = frame_of(at, "reader", "arm", "submitted", "median s / case")
    assert progress["submitted"].tolist() == [3, 3, 3, 3] and set(progress["reader"]) == {"reader1", "reader2"}
    at.number_input(key="coord_results.n_boot").set_value(200)
    at.button(key="coord_results.compute").click().run()
    assert not at.exception and not at.error
    auroc = frame_of(at, "arm", "mean AUROC", "95 % CI").set_index("arm")
    assert auroc.loc["score", "mean AUROC"] == 1.0 and auroc.loc["score", "reader1"] == 1.0
    assert frame_of(at, "arm", "reference", "difference")["difference"].tolist() == [0.0]
    ss = frame_of(at, "arm", "reader", "sensitivity", "specificity")
    assert set(ss["sensitivity"].dropna()) == {1.0} and set(ss["specificity"].dropna()) == {1.0}
    assert "Fleiss kappa" in frame_of(at, "arm", "Fleiss kappa").columns
    assert len(at.get("plotly_chart")) == 6  # the library's figures: AUROC, progress, ratings, time, SUS
    at.button(key="coord_results.export").click().run()
    (dl,) = at.get("download_button")
    assert dl.proto.label.startswith("Download pilot-") and dl.proto.label.endswith(".zip")
    name, data = at.session_state[state.COORD_EXPORT][1:]
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        reads = pd.read_csv(zf.open(next(n for n in zf.namelist() if n.endswith("/reads.csv"))))
        timings = pd.read_csv(zf.open(next(n for n in zf.namelist() if n.endswith("/timings.csv"))))
    assert len(reads) == 12 and set(reads["reader"]) == {"R01", "R02"}  # pseudonymised by default
    assert (timings["seconds_to_submit"] >= 0).all()
    # the audit log: the export, filtered by action
    request_page(at, "pages/coordinator_audit.py")
    assert titles(at) == ["Audit log"]
    at.selectbox(key="coord_audit.action").select("export").run()
    rows = frame_of(at, "actor", "action", "entity")
    assert rows["action"].tolist() == ["export"] and rows["actor"].tolist() == ["coord"]
    at.selectbox(key="coord_audit.action").select(None).run()
    at.selectbox(key="coord_audit.actor").select("reader2").run()
    acts = set(frame_of(at, "actor", "action")["action"])
    assert acts == {"open", "submit", "questionnaire"}
