"""Concepts across images: which concepts carry the evidence over the data set, per truth label."""
import streamlit as st

from dashboard.ui import ConceptLensError, resources, state
from dashboard.ui.screens import dataset_concepts as dc

ctx = resources.get_context()
st.title("Concepts across images", help="Every image's concept report, summarised per truth label.")
try:
    view = dc.load_dataset_concepts(ctx, st.session_state.get(state.DATASET_RUN))
except ConceptLensError as exc:  # StoreError: a batch report that cannot be read
    st.error(str(exc))
    st.stop()

if view.run is None:
    st.info("No batch report yet. Stop the app and run `" + view.command + "` (every image, or `--worklist FILE`; "
            "`--engine ray` spreads it over Ray workers), then open this page again.")
    st.stop()

keys = [r["key"] for r in view.runs]
st.selectbox("Batch report", keys, index=keys.index(view.run["key"]), key=state.DATASET_RUN,
             format_func=lambda k: dc.run_label(next(r for r in view.runs if r["key"] == k)))
st.caption(f"{view.n_images} images. The share is each concept's part of the model's positive attribution "
           "(the rest is unexplained); an image counts as *top* for the concept with its largest share.")
left, right = st.columns(2)
left.plotly_chart(view.share_figure, key="dataset.shares", width="stretch")
right.plotly_chart(view.area_figure, key="dataset.areas", width="stretch")
st.dataframe([{"truth": r["truth"], "concept": r["concept"], "images": r["images"],
               "mean share": r["mean_share"], "mean area mm²": r["mean_area_mm2"], "images top": r["images_top"],
               "mean TCAV": r["mean_tcav"], "mean P": r["mean_probability"]} for r in view.summary],
             hide_index=True, width="stretch", key="dataset.summary")
