"""Every page through streamlit's AppTest, started at app.py against a small real store."""
from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from dashboard.data.store import Store
from dashboard.settings import PROJECT_ROOT
from dashboard.testing import app_data
from dashboard.ui import canvas, resources, state
from dashboard.ui import context as context_mod
from dashboard.ui.screens import label as lb
from dashboard.ui.screens import worklist as wl
from dashboard.ui.types import PatchRef
from dashboard.ui.work import concepts as cx

APP = str(PROJECT_ROOT / "app.py")
TIMEOUT = 120


NO_CARD = "no-such-card"


@pytest.fixture
def data(settings, monkeypatch):
    """A real store in tmp_path with three cases; the AppTest process reads it through the env.
    No usable model card is named, so these pages run without a model (as after a failed load)."""
    monkeypatch.setenv("CONCEPTLENS_MODEL_CARD", NO_CARD)
    settings = settings.with_overrides(model_card=NO_CARD)
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


def frame_with(at: AppTest, *columns: str):
    """The first st.dataframe whose value has these columns (AppTest does not expose their keys)."""
    for df in at.dataframe:
        value = df.value
        if all(c in value.columns for c in columns):
            return value
    raise AssertionError(f"no dataframe with columns {columns}")


def read_tiles(at: AppTest) -> list[tuple[str, str]]:
    """(caption, image src) of every image hung on the Read page: clickable images
    (streamlit-image-coordinates) with their caption below, in hanging order."""
    srcs = [json.loads(c.proto.json_args)["src"] for c in at.get("component_instance")
            if c.proto.component_name.endswith("streamlit_image_coordinates")]
    captions = [c.value for c in at.caption if c.value.split(" ·")[0] in ("R CC", "L CC", "R MLO", "L MLO")]
    assert len(srcs) == len(captions), (len(srcs), captions)
    return list(zip(captions, srcs))


def tile_rgb(src: str) -> np.ndarray:
    """(H, W, 3) uint8 pixels of a tile's image source (a data URL)."""
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("RGB"))


def chroma(rgb: np.ndarray) -> float:
    """Share of a tile's pixels in colour (red and blue apart by more than JPEG-like noise)."""
    return float((np.abs(rgb[..., 0] - rgb[..., 2]) > 24).mean())


def store_of(at_settings) -> Store:
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


@pytest.fixture
def model_data(data, monkeypatch):
    """``data`` plus a tiny real model card the app loads (CONCEPTLENS_MODEL_CARD)."""
    settings = data["settings"]
    app_data.make_tiny_card(settings)
    monkeypatch.setenv("CONCEPTLENS_MODEL_CARD", app_data.TINY_CARD)
    settings = settings.with_overrides(model_card=app_data.TINY_CARD)
    loaded = context_mod.load_model(app_data.TINY_CARD, settings.user_cards_dir, "cpu")
    assert loaded.error is None, loaded.error
    return {**data, "settings": settings, "weights_sha": loaded.weights_sha}


def test_read_hangs_the_case_with_presets_and_suspicious_patches(model_data):
    at = run_page("pages/read.py", {state.CASE_ID: "SYN-0001"})
    assert at.title[0].value == "Read · SYN-0001"
    images = read_tiles(at)
    assert len(images) == 4  # RCC | LCC over RMLO | LMLO
    labels = [cap for cap, _ in images]
    assert [cap.split(" ·")[0] for cap in labels] == ["R CC", "L CC", "R MLO", "L MLO"]
    assert all("STANDARD C 2000 / W 3000" in cap for cap in labels)
    # the file's own windows are offered as presets
    assert list(at.selectbox(key="read.preset").options) == [
        "1: STANDARD (C 2000 / W 3000)", "2: DENSE (C 2400 / W 1200)"]
    at.selectbox(key="read.preset").set_value(1).run()
    labels = [cap for cap, _ in read_tiles(at)]
    assert all("DENSE C 2400 / W 1200" in cap for cap in labels)
    at.radio(key="read.window_mode").set_value("manual").run()
    at.number_input(key="read.center").set_value(1500).run()
    at.number_input(key="read.width").set_value(800).run()
    labels = [cap for cap, _ in read_tiles(at)]
    assert all("MANUAL C 1500 / W 800" in cap for cap in labels)
    # every image was scored and its suspicious patches listed, best first
    patches = at.dataframe[0].value
    assert set(patches["view"]) == {"R CC", "L CC", "R MLO", "L MLO"}
    assert list(patches["probability"]) == sorted(patches["probability"], reverse=True)
    assert all(cap.split(" · ")[1].startswith("P(lesion) ") for cap in labels)


def test_read_overlays_and_opening_a_patch(model_data):
    at = run_page("pages/read.py", {state.CASE_ID: "SYN-0001"})
    plain = [src for _, src in read_tiles(at)]
    at.radio(key="read.overlay").set_value("lesion map").run()
    assert not at.exception
    with_map = [src for _, src in read_tiles(at)]
    at.radio(key="read.overlay").set_value("attribution").run()
    assert not at.exception
    with_attr = [src for _, src in read_tiles(at)]
    assert plain != with_map and with_map != with_attr
    # the plain films are gray but for the patch boxes; the lesion map changes a part of each film (only
    # where the model's probability is above its operating point); the attribution colours every film
    for a, b, c in zip(plain, with_map, with_attr):
        gray, lesion, attr = (tile_rgb(src).astype(int) for src in (a, b, c))
        assert chroma(gray) < 0.03 and chroma(attr) > 0.05, (chroma(gray), chroma(attr))
        assert 0.01 < (np.abs(lesion - gray).max(-1) > 0).mean() < 0.5
    at.selectbox(key="read.patch").set_value(0).run()
    first = at.dataframe[0].value.iloc[0]
    at.button(key="read.open_patch").click().run()
    assert at.session_state[state.PATCH] == (first["image_id"], first["x0"], first["y0"], first["size"])


def test_a_second_session_reuses_what_the_first_computed(model_data):
    """Sessions share the process-wide caches (``resources.get_caches``): a second reader opening the
    same case computes no image, lesion map or display again."""
    first = run_page("pages/read.py", {state.CASE_ID: "SYN-0001"})
    caches = resources.get_caches()
    misses = (caches.model_images.misses, caches.display.misses, caches.lesion_maps.misses)
    second = run_page("pages/read.py", {state.CASE_ID: "SYN-0001"})  # a new AppTest: a new session
    assert (caches.model_images.misses, caches.display.misses, caches.lesion_maps.misses) == misses
    assert read_tiles(second) == read_tiles(first)
    assert len(caches.lesion_maps) >= 4  # the four views' maps are in the shared caches


def test_read_without_a_model_still_shows_images_and_says_why(data):
    at = run_page("pages/read.py", {state.CASE_ID: "MIAS-mdb001"})
    assert at.title[0].value == "Read · MIAS-mdb001"
    assert len(read_tiles(at)) == 1
    assert any(c.value == "no R image for this view" for c in at.caption)  # the empty slot keeps its side
    at.radio(key="read.overlay").set_value("lesion map").run()
    assert any("Overlays need the model" in w.value for w in at.warning)
    assert any("model is not available" in i.value for i in at.info)


def test_model_data_shows_the_card_switches_and_ingests_with_failures(model_data, tmp_path, monkeypatch):
    roots = tmp_path / "roots"  # folder ingest reads from the import roots only
    monkeypatch.setenv("CONCEPTLENS_IMPORT_ROOTS", str(roots))
    at = run_page("pages/model_data.py")
    assert at.subheader[0].value == f"Model card · {app_data.TINY_CARD}"
    card = frame_with(at, "field", "value").set_index("field")["value"]
    assert card["arch"] == "resnet10t" and card["input_size"] == "3x64x64"
    metrics = frame_with(at, "metric", "value").set_index("metric")["value"]
    assert metrics["auroc"] == "0.5" and metrics["threshold"] == "0.5"
    listed = frame_with(at, "name", "arch", "weights")
    assert {"demo-lite0-synth", "imagenet-lite0", app_data.TINY_CARD} <= set(listed["name"])
    sources = frame_with(at, "source", "cases", "images").set_index("source")
    assert sources.loc["synthetic", "cases"] == 2 and sources.loc["mini-mias", "images"] == 1
    # switch to another card: the page now describes it
    at.selectbox(key="model.pick").select("imagenet-lite0").run()
    at.button(key="model.use").click().run()
    assert at.session_state[state.MODEL_CARD] == "imagenet-lite0"
    assert at.subheader[0].value == "Model card · imagenet-lite0"
    # ingest: one readable PNG, one broken file -> reported, not fatal
    folder = roots / "incoming"
    folder.mkdir(parents=True)
    Image.fromarray((app_data.breast_pixels(5, "L") >> 4).astype("uint8")).save(folder / "good.png")
    (folder / "broken.dcm").write_bytes(b"not a dicom at all")
    at.text_input(key="data.folder").input(str(folder)).run()
    at.button(key="data.ingest").click().run()
    assert not at.exception
    assert "Added 1, duplicates 0, failed 1" in at.success[0].value
    results = frame_with(at, "file", "result", "detail")
    failures = results[results["result"] == "failed"]
    assert len(failures) == 1 and failures["file"].str.endswith("broken.dcm").all()
    at.text_input(key="data.folder").input(str(roots / "nowhere")).run()
    at.button(key="data.ingest").click().run()
    assert "is not a folder" in at.error[-1].value


def app_ctx(settings):
    """A context on the store the app itself uses (one DuckDB connection per file in a process),
    with the caches the app's sessions share."""
    return context_mod.build_context(settings, store_of(settings),
                                     context_mod.load_model(settings.model_card, settings.user_cards_dir, "cpu"),
                                     resources.get_caches())


@pytest.fixture
def labeled(model_data):
    """``model_data`` with dataset statistics and one saved drawing of 'mass'."""
    ctx = app_ctx(model_data["settings"])
    cx.compute_stats(ctx, 120)
    view = lb.load_patch(ctx, PatchRef("SYN-0001-LCC", 20, 70, 64))
    rec = json.loads((PROJECT_ROOT / "tests/fixtures/fabric/polygon_448.json").read_text())
    m = lb.match(ctx, view, lb.drawings_from_canvas(view, rec["json"], rec["fit"]))
    res = lb.save(ctx, view, m, "mass", "Dr Test")
    return {**model_data, "ctx": ctx, "match": m, "annotation_id": res.annotation_id}


def test_label_asks_the_reader_once_then_shows_patch_and_palette(model_data):
    at = run_page("pages/label.py", {state.PATCH: ("SYN-0001-RCC", 30, 60, 64)})
    assert "Who is reading?" in at.info[0].value
    at.button(key="label.start").click().run()
    assert "reader name is required" in at.error[0].value
    at.text_input(key="label.reader_name").input("Dr Who").run()
    at.button(key="label.start").click().run()
    assert at.session_state[state.READER] == "Dr Who"
    assert "Reader **Dr Who** · R CC · SYN-0001 · patch (30, 60) size 64" in at.caption[0].value
    assert "mirrored" in at.caption[0].value
    groups = at.selectbox(key="label.group").options
    assert {"mass shape", "mass margin", "calcification morphology", "normal structure"} <= set(groups)
    at.selectbox(key="label.group").select("mass margin").run()
    assert "margin-spiculated" in at.radio(key="label.concept").options
    # nothing drawn yet: a clear hint, no Save
    assert any("Nothing is drawn yet" in i.value for i in at.info)
    assert not [b for b in at.button if b.key == "label.save"]
    # a custom concept joins the palette under its group
    at.text_input(key="label.new_name").input("Skin Thickening").run()
    at.text_input(key="label.new_group").input("skin").run()
    at.button(key="label.add_concept").click().run()
    assert "Added 'skin-thickening'" in at.success[0].value
    at.selectbox(key="label.group").select("skin").run()
    assert at.radio(key="label.concept").options == ["skin-thickening"]
    at.text_input(key="label.new_name").input("bad name!").run()
    at.button(key="label.add_concept").click().run()
    assert "letters, digits or hyphens" in at.error[0].value


def test_label_without_a_patch_points_to_the_read_page(model_data):
    at = run_page("pages/label.py", {state.READER: "Dr Who"})
    assert "No patch is open" in at.info[0].value


def test_units_map_detail_and_undo(labeled):
    m = labeled["match"]
    at = run_page("pages/units.py")
    counts = frame_with(at, "concept", "units")
    assert counts.set_index("concept").loc["mass", "units"] == len(m.units_above)
    labels = frame_with(at, "unit", "concept", "iou")
    assert set(labels["unit"]) == set(m.units_above)
    unit = m.best_unit
    at.number_input(key="units.unit_input").set_value(unit).run()
    at.button(key="units.show").click().run()
    assert at.subheader[0].value.startswith(f"Unit {unit} · mass (IoU ")
    assert len(at.get("image")) >= 1  # exemplars
    drawings = frame_with(at, "annotation_id", "status")
    assert list(drawings["status"]) == ["labels this unit"]
    at.button(key="units.undo").click().run()
    assert f"{unit}: unlabeled" in at.success[0].value
    assert "No unit is labeled yet" in at.info[0].value
    assert frame_with(at, "annotation_id", "status")["status"].tolist() == ["undone"]
    assert labeled["ctx"].store.list_unit_labels(labeled["settings"].model_card, "layer4") == []


def test_units_without_statistics_says_where_to_compute_them(model_data):
    at = run_page("pages/units.py")
    assert "Model and data page" in at.error[0].value


def test_report_retrains_the_probe_and_maps_concepts(labeled):
    at = run_page("pages/report.py", {state.CASE_ID: "SYN-0001", state.READER: "Dr Test"})
    assert any("No concept probe is trained yet" in i.value for i in at.info)
    at.button(key="report.retrain").click().run()
    assert not at.exception
    assert "Concept probe v1 trained on 1 drawing(s)." in at.success[0].value
    metrics = frame_with(at, "concept", "auroc", "note")
    assert metrics["concept"].tolist() == ["mass"]
    assert "only 1 drawing" in metrics["note"].iloc[0]  # honest: too few drawings for a validated AUROC
    probe_line = next(m.value for m in at.markdown if "Concept probe v1" in m.value)  # the lead comes first
    assert "trained" in probe_line and "Dr Test" in at.text[0].value  # names as plain text
    legend = frame_with(at, "concept", "colour", "area_%")
    assert legend["concept"].tolist() == ["mass"]
    assert len(at.get("image")) == 2  # the composite map and the selected concept's map
    # the engine's report: concept rows, figures, exports
    concepts = frame_with(at, "concept", "attribution share", "logit part")
    assert concepts["concept"].tolist() == ["mass"]
    assert concepts["units"].iloc[0] == len(labeled["match"].units_above)
    (panel,) = at.get("plotly_chart")  # the bar charts in one figure; the two map figures on request
    spec = json.loads(panel.proto.spec)
    titles = [a["text"] for a in spec["layout"]["annotations"]]
    assert titles[0].startswith("Share of the gradcam attribution") and len(spec["data"]) >= 5
    assert any(t.startswith("Labeled units per concept") for t in titles)
    assert any(t.startswith("TCAV score for") for t in titles)
    at.toggle(key=state.REPORT_MAPS).set_value(True).run()
    charts = at.get("plotly_chart")
    assert len(charts) == 3
    assert json.loads(charts[1].proto.spec)["layout"]["title"]["text"].startswith("Concept maps")
    assert {b.label for b in at.get("download_button")} == {"Export HTML", "Export JSON", "Export DICOM SEG + SR",
                                                             "Export DICOM SR"}
    # TCAV is not run with the report: it says so for this probe version
    assert any("TCAV is not computed for probe v1 yet" in i.value for i in at.info)
    # one drawing gives too few positions for TCAV's random concepts: a clear message, no crash
    at.button(key="report.tcav").click().run()
    assert not at.exception and "TCAV needs" in at.error[0].value
    ctx = labeled["ctx"]
    wl.score_unscored(ctx)
    for image_id in ("SYN-0001-RCC", "SYN-0002-LCC"):  # small drawings leave background positions free
        view = lb.load_patch(ctx, PatchRef(image_id, 30, 80, 64))
        d = canvas.Drawing("rect", ((2, 2), (20, 2), (20, 20), (2, 20)))
        lb.save(ctx, view, lb.match(ctx, view, [d]), "mass", "Dr Test")
    at.button(key="report.retrain").click().run()
    assert "Concept probe v2 trained on 3 drawing(s)." in at.success[0].value
    at.button(key="report.tcav").click().run()
    assert not at.exception
    assert not at.error, [e.value for e in at.error]
    assert "TCAV scores updated." in at.success[0].value
    tc = frame_with(at, "concept", "TCAV", "TCAV p")
    assert 0.0 <= tc["TCAV"].iloc[0] <= 1.0
    # another image of the case
    at.selectbox(key="report.image").select("SYN-0001-RMLO").run()
    assert at.caption[0].value.startswith("R MLO · SYN-0001")


def test_report_retrain_without_drawings_says_so(model_data):
    at = run_page("pages/report.py", {state.CASE_ID: "SYN-0001"})
    at.button(key="report.retrain").click().run()
    assert "No drawings to train concept probes on" in at.error[0].value


def test_selections_survive_visits_to_other_pages(model_data):
    """Case, patch, reader, lexicon group and concept, window/level and the worklist filters are
    still set after the reader visits other pages and comes back."""
    at = run_page("pages/worklist.py")
    at.text_input(key=state.WORKLIST_SEARCH).input("SYN").run()
    at.toggle(key=state.WORKLIST_DESCENDING).set_value(False).run()
    at.selectbox(key="worklist.case").select("SYN-0001").run()
    at.button(key="worklist.open").click().run()
    assert at.session_state[state.CASE_ID] == "SYN-0001"
    at.switch_page("pages/read.py")
    at.run()
    assert at.title[0].value == "Read · SYN-0001"
    at.radio(key=state.READ_WINDOW_MODE).set_value("manual").run()
    at.number_input(key=state.READ_CENTER).set_value(1500).run()
    at.number_input(key=state.READ_WIDTH).set_value(800).run()
    at.radio(key=state.READ_OVERLAY).set_value("lesion map").run()
    at.selectbox(key="read.patch").set_value(0).run()
    at.button(key="read.open_patch").click().run()
    patch = at.session_state[state.PATCH]
    at.switch_page("pages/label.py")
    at.run()
    at.text_input(key="label.reader_name").input("Dr Keep").run()
    at.button(key="label.start").click().run()
    at.selectbox(key=state.LABEL_GROUP).select("mass margin").run()
    at.radio(key=state.LABEL_CONCEPT).set_value("margin-spiculated").run()
    at.radio(key=state.LABEL_TOOL).set_value("rect").run()
    # away: every other page, then back
    for page in ("pages/units.py", "pages/report.py", "pages/model_data.py", "pages/worklist.py"):
        at.switch_page(page)
        at.run()
        assert not at.exception, (page, [e.value for e in at.exception])
    assert at.text_input(key=state.WORKLIST_SEARCH).value == "SYN"
    assert at.toggle(key=state.WORKLIST_DESCENDING).value is False
    assert list(at.dataframe[0].value["case_id"]) == ["SYN-0001", "SYN-0002"]
    at.switch_page("pages/label.py")
    at.run()
    assert at.session_state[state.PATCH] == patch and at.session_state[state.READER] == "Dr Keep"
    assert at.selectbox(key=state.LABEL_GROUP).value == "mass margin"
    assert at.radio(key=state.LABEL_CONCEPT).value == "margin-spiculated"
    assert at.radio(key=state.LABEL_TOOL).value == "rect"
    assert "Reader **Dr Keep**" in at.caption[0].value
    # the Report opens on the labeled image
    at.switch_page("pages/report.py")
    at.run()
    assert at.session_state[state.IMAGE_ID] == patch[0]
    assert at.selectbox(key="report.image").value == patch[0]
    at.switch_page("pages/read.py")
    at.run()
    assert at.title[0].value == "Read · SYN-0001"
    assert at.radio(key=state.READ_WINDOW_MODE).value == "manual"
    assert at.number_input(key=state.READ_CENTER).value == 1500
    assert at.number_input(key=state.READ_WIDTH).value == 800
    assert at.radio(key=state.READ_OVERLAY).value == "lesion map"
    labels = [cap for cap, _ in read_tiles(at)]
    assert all("MANUAL C 1500 / W 800" in cap for cap in labels)
