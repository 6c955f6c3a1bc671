"""Report: the concepts behind an image's prediction, their maps, the probe and its metrics."""
import streamlit as st

from dashboard.ui import ConceptLensError, resources, state
from dashboard.ui.screens import report as rp
from dashboard.ui.text import escape_markdown

ctx = resources.get_context()
st.title("Report")

flash = st.session_state.pop(state.REPORT_FLASH, None)
if flash:
    st.success(flash)

view = rp.load_report(ctx, st.session_state.get(state.CASE_ID), st.session_state.get(state.IMAGE_ID))
if view.image_ids:
    st.session_state[state.REPORT_IMAGE] = view.image_id
    st.selectbox("Image", view.image_ids, key=state.REPORT_IMAGE, format_func=view.image_names.get,
                 on_change=lambda: st.session_state.update({state.IMAGE_ID: st.session_state[state.REPORT_IMAGE]}))
if view.probability is not None:
    score = f" · P({view.target}) {view.probability:.3f}"
else:
    score = "" if view.score is None else f" · P(lesion) {view.score:.2f}"
st.caption(f"{escape_markdown(view.image_label)}{score} · model {escape_markdown(ctx.card_name)}")
for note in view.notes:
    st.info(note)

# ------------------------------------------------------------------ probe version and retraining
p = view.probe
c1, c2 = st.columns([3, 1])
if p is not None:
    c1.markdown(f"**Concept probe v{p.version}** · layer `{p.layer}` · trained {p.created_at} on "
                f"{p.n_drawings} drawing(s)")
    c1.text("Readers: " + (", ".join(p.readers) or "—"))  # names as typed, never markdown
if c2.button("Retrain probes", key="report.retrain", disabled=not ctx.model_ready, type="primary"):
    try:
        with resources.progress("Training concept probes", done="Probes trained") as cb:
            info = rp.retrain(ctx, st.session_state.get(state.READER, ""), cb)
        st.session_state[state.REPORT_FLASH] = f"Concept probe v{info.version} trained on {info.n_drawings} drawing(s)."
        st.rerun()
    except ConceptLensError as exc:  # e.g. ValidationError: no drawings yet
        st.error(str(exc))

if p is not None:
    with st.expander("Is each concept learnt? Validation AUROC against the number of drawings"):
        if st.button("Compute learning curve", key="report.curve"):
            try:
                with resources.progress("Refitting probes on growing subsets", done="Learning curve ready") as cb:
                    st.session_state[state.REPORT_CURVE] = rp.learning_curve(ctx, cb)
            except ConceptLensError as exc:
                st.error(str(exc))
        curve = st.session_state.get(state.REPORT_CURVE)
        if curve is not None:
            if curve.note:
                st.info(curve.note)
            if curve.figure is not None:
                st.plotly_chart(curve.figure, key="report.curve_fig", width="stretch")
            st.dataframe(curve.rows, hide_index=True, width="stretch", key="report.curve_rows")
    st.dataframe(p.metrics, hide_index=True, width="stretch", key="report.metrics",
                 column_config={"auroc": st.column_config.NumberColumn("AUROC (by image)", format="%.3f")})

# ------------------------------------------------------------------ where the concepts are
if view.overlay is not None:
    left, right = st.columns([1, 1], gap="large")
    left.image(view.encoded.get("overlay", view.overlay), caption=f"Concept map (probability ≥ {rp.MAP_LEVEL:g})",
               width="stretch")
    with right:
        st.dataframe(view.legend, hide_index=True, width="stretch", key="report.legend",
                     column_config={"colour": st.column_config.TextColumn("colour"),
                                    "area_%": st.column_config.NumberColumn("area of breast %", format="%.2f")})
        names = [c for c, _ in view.concept_maps]
        if names:
            pick = st.selectbox("Concept map", names, key=state.REPORT_CONCEPT, persist_state=state.PERSIST)
            st.image(view.encoded.get(pick, dict(view.concept_maps)[pick]), caption=f"P({pick})", width="stretch")

# ------------------------------------------------------------------ which concepts carry the evidence
if view.concepts:
    st.subheader("Which concepts carry the evidence")
    st.dataframe(view.concepts, hide_index=True, width="stretch", key="report.concepts",
                 column_config={"attribution share": st.column_config.ProgressColumn(
                     "attribution share", min_value=0.0, max_value=1.0, format="%.2f")})
    c1, c2, c3 = st.columns([1, 1, 1])
    c1.download_button("Export HTML", view.export_html, file_name=f"{view.export_name}.html", mime="text/html",
                       key="report.export_html", icon=":material/download:")
    c2.download_button("Export JSON", view.export_json, file_name=f"{view.export_name}.json",
                       mime="application/json", key="report.export_json", icon=":material/download:")
    if c3.button("Run TCAV" if view.tcav_run is None else "Rerun TCAV", key="report.tcav"):
        try:
            with resources.progress("Running TCAV", done="TCAV done") as cb:
                rp.run_tcav(ctx, cb)
            st.session_state[state.REPORT_FLASH] = "TCAV scores updated."
            st.rerun()
        except ConceptLensError as exc:  # ValidationError, ReportError: what TCAV still needs
            st.error(str(exc))
    for fig in view.figures:  # the engine's bar charts, one figure
        st.plotly_chart(fig, width="stretch", theme=None)  # the engine's own colours
    if view.map_figures and st.toggle("Show the map figures (concept contours, attribution)", key=state.REPORT_MAPS,
                                      persist_state=state.PERSIST):
        for col, fig in zip(st.columns(2), view.map_figures()):
            col.plotly_chart(fig, width="stretch", theme=None)
