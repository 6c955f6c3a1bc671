"""Model and data: the card in use and its metrics, switch card, dataset statistics, ingest, demo."""
import streamlit as st

from dashboard.ui import ConceptLensError, resources, state
from dashboard.ui.screens import model_data as md

ctx = resources.get_context()
st.title("Model and data")
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
st.caption(f"Label store: `{s['db_path']}`")

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

with st.expander("Ingest a folder"):
    folder = st.text_input("Folder on this machine", key="data.folder", placeholder="/path/to/dicoms")
    source = st.text_input("Source name", value="ingest", key="data.source")
    if st.button("Ingest", key="data.ingest"):
        try:
            with resources.progress("Ingesting", done="Ingest finished") as cb:
                report = md.ingest(ctx, folder, source, cb)
            st.success(f"Added {report.added}, duplicates {report.duplicates}, failed {len(report.failed)}"
                       + (f", skipped {report.skipped}" if report.skipped else ""))
            if report.failed:
                st.dataframe([{"file": p, "reason": r} for p, r in report.failed], hide_index=True,
                             width="stretch", key="data.failures")
        except ConceptLensError as exc:  # IngestError says what to do
            st.error(str(exc))

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
