"""Worklist: every case with the model's score and the label status; open one to read it."""
import streamlit as st

from dashboard.ui import ConceptLensError, resources, state
from dashboard.ui.screens import worklist as wl

ctx = resources.get_context()
st.title("Worklist", help="Every case with the model's P(lesion) and its label status: pick one and open it to read it.")
scores_ready = resources.warmup_notice(("scores",), key="worklist", refresh_every=0.1)

f1, f2, f3, f4 = st.columns([2, 2, 1.2, 1.2])
kinds = f1.multiselect("Source", ["synthetic", "real"], key=state.WORKLIST_KINDS,
                       persist_state=state.PERSIST, placeholder="all")
truths = f2.multiselect("Truth", ["normal", "benign", "malignant", "unknown"], key=state.WORKLIST_TRUTHS,
                        persist_state=state.PERSIST,
                        placeholder="all")
status = f3.selectbox("Label status", wl.STATUSES, key=state.WORKLIST_STATUS, persist_state=state.PERSIST)
scored = f4.selectbox("Scored", wl.SCORED, key=state.WORKLIST_SCORED, persist_state=state.PERSIST)
s1, s2, s3 = st.columns([3, 1.5, 1])
search = s1.text_input("Search case or description", key=state.WORKLIST_SEARCH, persist_state=state.PERSIST)
sort = s2.selectbox("Sort by", list(wl.SORTS), format_func=wl.SORTS.get, key=state.WORKLIST_SORT,
                    persist_state=state.PERSIST)
descending = s3.toggle("Descending", value=True, key=state.WORKLIST_DESCENDING, persist_state=state.PERSIST)

if st.session_state.pop(state.WORKLIST_SCORE_CLICKED, False):
    try:
        with resources.progress("Scoring unscored cases", done="Scoring finished") as cb:
            report = wl.score_unscored(ctx, cb)
        st.success(f"Scored {report.n_scored} of {report.n_images} image(s).")
        for image_id, msg in report.failures:
            st.error(f"{image_id}: {msg}")
    except ConceptLensError as exc:  # ModelUnavailable: the typed error's text is the message
        st.error(str(exc))

view = wl.load_worklist(ctx, wl.WorklistFilter(tuple(kinds), tuple(truths), status, scored, search, sort,
                                               descending))

m1, m2, m3, m4 = st.columns(4)
m1.metric("Cases", view.total)
m2.metric("Shown", len(view.rows))
m3.metric("Not scored", view.n_unscored_cases)
m4.metric("Model", view.model_card, help=f"weights SHA-256 {view.weights_sha[:12] or 'n/a'}; "
                                         f"positive above {view.threshold:.2f}")
if view.model_error:
    st.warning(f"The model is not available, so cases cannot be scored: {view.model_error}")
st.button("Score unscored cases", key="worklist.score",
          disabled=not view.n_unscored_cases or bool(view.model_error) or not scores_ready,
          help=None if scores_ready else "The cases are being scored in the background.",
          on_click=lambda: st.session_state.update({state.WORKLIST_SCORE_CLICKED: True}))

if not view.rows:
    st.info("No case matches these filters." if view.total else
            "The store has no cases yet. Build the demo set (`make demo`) or ingest a folder on "
            "the Model and data page.")
else:
    table = st.dataframe(
        view.rows, key="worklist.table", hide_index=True, width="stretch", on_select="rerun",
        selection_mode="single-row",
        column_order=["case_id", "kind", "source", "truth", "views", "prediction", "probability", "domain_warning",
                      "scored", "n_annotations", "concepts", "status", "description"],
        column_config={
            "case_id": "Case", "kind": "Kind", "source": "Source", "truth": "Truth", "views": "Views",
            "prediction": "Prediction", "scored": "Scored",
            "probability": st.column_config.ProgressColumn("P(lesion)", min_value=0.0, max_value=1.0, format="%.2f"),
            "n_annotations": st.column_config.NumberColumn("Drawings"), "concepts": "Concepts",
            "status": "Label status", "description": "Description",
            "domain_warning": st.column_config.TextColumn(
                "Domain", help="⚠: the model was trained on another kind of image; its scores are not calibrated here"),
        })
    mismatched = sum(1 for r in view.rows if r["domain_warning"])
    if mismatched:
        st.warning(f"⚠ {mismatched} case(s) shown are from another domain than {view.model_card} was trained on: "
                   "their scores are not calibrated (column Domain). Read picks a matching card when one exists.")
    ids = [r["case_id"] for r in view.rows]
    picked = table.selection.rows if table is not None and hasattr(table, "selection") else []
    if picked:
        st.session_state[state.WORKLIST_CASE] = ids[picked[0]]
    elif st.session_state.get(state.WORKLIST_CASE) not in ids:
        current = st.session_state.get(state.CASE_ID)
        st.session_state[state.WORKLIST_CASE] = current if current in ids else ids[0]
    c1, c2 = st.columns([3, 1])
    case_id = c1.selectbox("Case", ids, key=state.WORKLIST_CASE)
    wl.prefetch_case(ctx, case_id)  # Read then opens on images already windowed and scored
    if c2.button("Open case", key="worklist.open", type="primary"):
        st.session_state[state.CASE_ID] = case_id
        st.session_state.pop(state.IMAGE_ID, None)
        st.switch_page("pages/read.py")
