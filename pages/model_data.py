"""Model and data: the card in use and its metrics, switch card, dataset statistics, upload and ingest, demo."""
import streamlit as st

from dashboard.ui import ConceptLensError, resources, state
from dashboard.ui.screens import model_data as md

ctx = resources.get_context()
st.title("Model and data", help="The model card in use, the data in the store, uploads and ingest, and the demo's seeded drawings.")
resources.warmup_notice(("statistics", "demo drawings", "scores", "tcav"), key="model_data")
view = md.load_model_data(ctx)

# ------------------------------------------------------------------ the model
st.subheader(f"Model card · {view.card_name}")
if view.model_error:
    st.error(f"The model is not available: {view.model_error}")
if view.card:
    c = view.card
    st.caption(c["description"])
    left, right = st.columns([1.3, 1])
    left.dataframe([{"field": k, "value": str(v)} for k, v in c.items() if k not in ("description", "training")],
                   hide_index=True, width="stretch", key="model.card_table")
    right.markdown(f"**Metrics** (device `{view.device}`)")
    if view.metrics:
        right.dataframe([{"metric": m["metric"], "value": str(m["value"])} for m in view.metrics],
                        hide_index=True, width="stretch", key="model.metrics")
    else:
        right.caption("This card records no metrics.")
    if c["training"]:
        with st.expander("Training data and licence"):
            st.json(c["training"])

names = [card["name"] for card in view.cards]
with st.expander("Switch model card", expanded=bool(view.model_error)):
    st.dataframe(view.cards, hide_index=True, width="stretch", key="model.cards")
    for note in view.notes:
        st.warning(note)
    if names:
        current = names.index(view.card_name) if view.card_name in names else 0
        pick = st.selectbox("Card", names, index=current, key="model.pick")
        if st.button("Use this card", key="model.use", disabled=pick == view.card_name):
            st.session_state[state.MODEL_CARD] = pick
            st.rerun()

# ------------------------------------------------------------------ the data
st.subheader("Data")
s = view.store
m1, m2, m3 = st.columns(3)
m1.metric("Cases", s["cases"])
m2.metric("Images", s["images"])
m3.metric("Drawings", s["drawings"])
if s["by_source"]:
    st.dataframe(s["by_source"], hide_index=True, width="stretch", key="data.by_source")
st.caption("Label store: " + s["db_name"])
if s["no_spacing"]:
    with st.expander(f"{s['no_spacing']} image(s) have no pixel spacing", expanded=True):
        st.caption("The model resamples every image to its own scale, so these cannot be scored or labeled "
                   "until they have one. PNG and JPEG files never say; mini-MIAS is 0.2 mm, CBIS-DDSM 0.05 mm.")
        mm = st.number_input("Pixel spacing (mm)", 0.005, 2.0, 0.1, step=0.01, format="%.3f", key="data.fix_spacing")
        if st.button("Set it for these images", key="data.fix_spacing_go"):
            try:
                n = md.set_default_spacing(ctx, mm)
                st.success(f"Pixel spacing {mm:g} mm set for {n} image(s).")
            except ConceptLensError as exc:
                st.error(str(exc))

st.markdown("**Dataset statistics** (activation quantiles and the unit map of the concept layer)")
if view.stats:
    st.dataframe([view.stats], hide_index=True, width="stretch", key="data.stats_table")
else:
    st.caption("Not computed for this model yet: the Label and Units pages need them.")
c1, c2 = st.columns([1, 2])
n_patches = c1.number_input("Patches (at most)", 16, 20000, 600, step=100, key="data.stats_patches")
if c2.button("Compute dataset statistics", key="data.stats", disabled=not ctx.model_ready):
    try:
        with resources.progress("Computing dataset statistics", done="Dataset statistics ready") as cb:
            md.compute_dataset_stats(ctx, int(n_patches), cb)
        st.rerun()
    except ConceptLensError as exc:  # ModelUnavailable, EngineNotReady
        st.error(str(exc))

def show_report(report, key: str) -> None:
    st.success(md.result_summary(report))
    if report.no_spacing:
        st.warning(f"{report.no_spacing} added image(s) have no pixel spacing: give a default spacing (above "
                   "or next time) before the model can use them.")
    if report.results:
        st.dataframe(md.result_rows(report), hide_index=True, width="stretch", key=key)


with st.expander("Upload images", expanded=not s["images"]):
    st.caption("DICOM, PNG, JPEG or TIFF files, or a ZIP of a study folder. Each image is stored de-identified "
               "(DICOM PS3.15 Basic profile) in the data directory; file and folder names are not kept.")
    files = st.file_uploader("Files", accept_multiple_files=True, key="data.upload_files")
    u1, u2 = st.columns(2)
    up_spacing = u1.number_input("Default pixel spacing (mm) for files that carry none (0: none)", 0.0, 2.0, 0.0,
                                 step=0.01, format="%.3f", key="data.upload_spacing")
    up_source = u2.text_input("Source name", value="upload", key="data.upload_source")
    if st.button("Ingest uploads", key="data.upload", disabled=not files):
        try:
            with resources.progress("Ingesting uploads", done="Uploads ingested") as cb:
                report = md.upload(ctx, [(f.name, f.getvalue()) for f in files], up_source, up_spacing, cb)
            show_report(report, "data.upload_results")
        except ConceptLensError as exc:  # UploadError, Incident: what went wrong, never a traceback
            st.error(str(exc))

with st.expander("Ingest a folder"):
    roots = md.folder_ingest_roots(ctx)
    if not roots:
        st.info(md.NO_ROOTS)
    else:
        st.caption("Folders inside the import roots only: " + ", ".join(roots))
        folder = st.text_input("Folder", key="data.folder", placeholder=roots[0])
        f1, f2 = st.columns(2)
        spacing = f1.number_input("Default pixel spacing (mm) for files that carry none (0: none)", 0.0, 2.0, 0.0,
                                  step=0.01, format="%.3f", key="data.folder_spacing")
        source = f2.text_input("Source name", value="ingest", key="data.source")
        if st.button("Ingest", key="data.ingest"):
            try:
                with resources.progress("Ingesting", done="Ingest finished") as cb:
                    report = md.ingest(ctx, folder, source, cb, spacing)
                show_report(report, "data.failures")
            except ConceptLensError as exc:  # IngestError says what to do
                st.error(str(exc))

last = md.last_import(ctx)
with st.expander("Last import" + (f" · {last.summary}" if last else ""), expanded=False):
    if last is None:
        st.caption("Nothing imported yet (importer command, folder ingest or upload).")
    else:
        st.markdown(f"**{last.summary}**")
        if last.failed:
            st.markdown("Failed, with the reason")
            st.dataframe(last.failed, hide_index=True, width="stretch", key="data.last_failed")
        if last.inferred:
            st.markdown("Fields inferred (not stated by the file)")
            st.dataframe(last.inferred, hide_index=True, width="stretch", key="data.last_inferred")
        if last.imported:
            st.markdown("Imported")
            st.dataframe(last.imported, hide_index=True, width="stretch", key="data.last_imported")

with st.expander("Synthetic demo set"):
    n = st.number_input("Cases", 1, 1000, ctx.settings.demo_cases, key="data.demo_cases")
    if st.button("Build missing demo cases", key="data.demo"):
        try:
            with resources.progress("Rendering the demo set", done="Demo set ready") as cb:
                summary = md.build_demo(ctx, int(n), cb)
            st.success(f"Demo set: {summary.n_cases} cases" + (" (already complete)" if summary.skipped else
                                                                f", built {summary.built_cases}"))
        except ConceptLensError as exc:  # DemoError
            st.error(str(exc))

# ------------------------------------------------------------------ the demo's seeded drawings
n_demo = md.demo_drawing_count(ctx)
with st.expander(f"Demo drawings ({n_demo} by '{md.DEMO_READER}')", expanded=False, key="data.demo_drawings_box"):
    st.caption(f"On a new demo the phantom's true findings are drawn under the reader '{md.DEMO_READER}' and "
               "concept probe v1 is trained on them, so the Report opens full. They are never part of a reader "
               "study. Remove them to start from your own drawings (or start clean with "
               "CONCEPTLENS_DEMO_DRAWINGS=0; command line: python -m dashboard.ui.warmup remove-demo-drawings).")
    if st.button("Remove the demo drawings", key="data.remove_demo_drawings", disabled=not n_demo,
                 icon=":material/delete:"):
        try:
            removed = md.remove_demo_drawings(ctx, st.session_state.get(state.READER, "") or "model and data page")
        except ConceptLensError as exc:  # StoreError
            st.error(str(exc))
        else:
            st.success(f"Removed {removed} demo drawing(s); the units they labelled fall back to your drawings.")
