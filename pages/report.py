"""Report: the concepts behind an image's prediction, their maps, the probe and its metrics."""
import streamlit as st

from dashboard.ui import ConceptLensError, resources, state
from dashboard.ui.screens import report as rp
from dashboard.ui.text import escape_markdown, human_time

ctx = resources.get_context()
st.title("Report", help="Which concepts carry the evidence for this image's prediction, where they are, and how sure we are.")
resources.warmup_notice(("demo drawings",), key="report")

ACTIONS = {"retrain": ("Retrain probes", "report.retrain"), "tcav": ("Run TCAV", "report.tcav"),
           "curve": ("Compute learning curve", "report.curve")}


def request(action: str) -> None:
    """The action buttons' callback: the next run does the job (with its progress box) before it
    builds the report, so the report it shows already has the job's result: no second run."""
    st.session_state[state.REPORT_ACTION] = action


head = st.container()
c1, *cols = st.columns([3, 1, 1, 1.3], vertical_alignment="center")
slots = {name: col.empty() for name, col in zip(ACTIONS, cols)}
jobs = st.container()
action = st.session_state.pop(state.REPORT_ACTION, None)
if action in ACTIONS:
    # the buttons are disabled while a job runs: a second click cannot start one again
    for name, slot in slots.items():
        slot.button(ACTIONS[name][0], key=f"{ACTIONS[name][1]}.running", disabled=True,
                    type="primary" if name == "retrain" else "secondary")
    with jobs:
        try:
            if action == "retrain":
                with resources.progress("Training concept probes", done="Probes trained") as cb:
                    info = rp.retrain(ctx, st.session_state.get(state.READER, ""), cb)
                st.session_state[state.REPORT_FLASH] = (f"Concept probe v{info.version} trained on "
                                                        f"{info.n_drawings} drawing(s).")
            elif action == "tcav":
                with resources.progress("Running TCAV", done="TCAV done") as cb:
                    rp.run_tcav(ctx, cb)
                st.session_state[state.REPORT_FLASH] = "TCAV scores updated."
            else:
                with resources.progress("Refitting probes on growing subsets", done="Learning curve ready") as cb:
                    st.session_state[state.REPORT_CURVE] = rp.learning_curve(ctx, cb)
        except ConceptLensError as exc:  # ValidationError (no drawings yet), ReportError: what the job needs
            st.error(str(exc))

view = rp.load_report(ctx, st.session_state.get(state.CASE_ID), st.session_state.get(state.IMAGE_ID),
                      st.session_state.get(state.REPORT_VERSION))
with head:
    flash = st.session_state.pop(state.REPORT_FLASH, None)
    if flash:
        st.success(flash)
    if view.image_ids:
        st.session_state[state.REPORT_IMAGE] = view.image_id
        st.selectbox("Image", view.image_ids, key=state.REPORT_IMAGE, format_func=view.image_names.get,
                     on_change=lambda: st.session_state.update({state.IMAGE_ID: st.session_state[state.REPORT_IMAGE]}))
    if view.probability is not None:
        score = f" · P({view.target}) {view.probability:.3f}"
    else:
        score = "" if view.score is None else f" · P(lesion) {view.score:.2f}"
    st.caption(f"{escape_markdown(view.image_label)}{score} · model {escape_markdown(ctx.card_name)}")
    if view.domain_warning:
        st.warning(view.domain_warning, icon="⚠️")
    if view.lead is not None:  # what a radiologist reads first; the tables are under Technical details
        with st.container(border=True, key="report_lead"):
            st.markdown(f"**{view.lead.headline}**")
            st.markdown("\n".join(f"- {s}" for s in view.lead.sentences))
            for caution in view.lead.cautions:
                st.caption(f":material/info: {caution}")
    for note in view.notes:
        st.info(note)

# ------------------------------------------------------------------ probe version and jobs
p = view.probe
if p is not None:
    c1.markdown(f"**Concept probe v{p.version}** · layer `{p.layer}` · trained {human_time(p.created_at)} on "
                f"{p.n_drawings} drawing(s)")
    c1.text("Readers: " + (", ".join(p.readers) or "—"))  # names as typed, never markdown
    if len(view.versions) > 1:
        latest = view.versions[0]
        v1, v2 = c1.columns(2)
        v1.selectbox("Probe version", [None] + view.versions, key=state.REPORT_VERSION,
                     format_func=lambda v: f"latest (v{latest})" if v is None else f"v{v}",
                     help="Show the report under any stored probe version")
        others = [v for v in view.versions if v != p.version]
        if st.session_state.get(state.REPORT_COMPARE) not in others:
            st.session_state[state.REPORT_COMPARE] = None
        v2.selectbox("Compare with version", [None] + others, key=state.REPORT_COMPARE,
                     format_func=lambda v: "—" if v is None else f"v{v}",
                     help="Concept shares and maps of this version next to another one")
slots["retrain"].button("Retrain probes", key="report.retrain", disabled=not ctx.model_ready, type="primary",
                        on_click=request, args=("retrain",))
slots["tcav"].button("Run TCAV" if view.tcav_run is None else "Rerun TCAV", key="report.tcav",
                     disabled=not ctx.model_ready or p is None, on_click=request, args=("tcav",),
                     help="TCAV scores of the probe's concepts for the lesion class")
slots["curve"].button("Compute learning curve", key="report.curve", disabled=not ctx.model_ready or p is None,
                      on_click=request, args=("curve",),
                      help="Is each concept learnt? Validation AUROC against the number of its drawings")

curve = st.session_state.get(state.REPORT_CURVE)
if p is not None and curve is not None:
    with st.expander("Is each concept learnt? Validation AUROC against the number of drawings",
                     expanded=action == "curve"):
        if curve.note:
            st.info(curve.note)
        if curve.figure is not None:
            st.plotly_chart(curve.figure, key="report.curve_fig", width="stretch")
        st.dataframe(curve.rows, hide_index=True, width="stretch", key="report.curve_rows")

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
    e1, e2, e3, e4 = st.columns([1, 1, 1.4, 1.2])
    e1.download_button("Export HTML", view.export_html, file_name=f"{view.export_name}.html", mime="text/html",
                       key="report.export_html", icon=":material/download:")
    e2.download_button("Export JSON", view.export_json, file_name=f"{view.export_name}.json",
                       mime="application/json", key="report.export_json", icon=":material/download:")
    e3.download_button("Export DICOM SEG + SR", view.export_dicom, file_name=f"{view.export_name}-dicom.zip",
                       mime="application/zip", key="report.export_dicom", icon=":material/download:",
                       help="ZIP: the source image, drawings and concept maps as DICOM SEG, the attribution as a "
                            "Parametric Map, the concept report as a TID 1500 SR (OHIF, 3D Slicer, a PACS)")
    e4.download_button("Export DICOM SR", view.export_sr, file_name=f"{view.export_name}-sr.dcm",
                       mime="application/dicom", key="report.export_sr", icon=":material/download:")
    for fig in view.figures:  # the engine's bar charts, one figure
        st.plotly_chart(fig, width="stretch", theme=None)  # the engine's own colours
    if view.map_figures and st.toggle("Show the map figures (concept contours, attribution)", key=state.REPORT_MAPS,
                                      persist_state=state.PERSIST):
        for col, fig in zip(st.columns(2), view.map_figures()):
            col.plotly_chart(fig, width="stretch", theme=None)

# ------------------------------------------------------------------ two probe versions side by side
other = st.session_state.get(state.REPORT_COMPARE)
if p is not None and other is not None and view.whatif_concepts:
    with st.expander(f"Probe v{p.version} compared with v{other}", expanded=True, key="report.compare_box"):
        try:
            diff = rp.compare_versions(ctx, view, other)
        except ConceptLensError as exc:
            st.error(str(exc))
        else:
            st.plotly_chart(diff.figure, width="stretch", theme=None, key="report.compare_fig")
            st.dataframe(diff.rows, hide_index=True, width="stretch", key="report.compare_rows")
            for col, v in zip(st.columns(2), (diff.version, diff.other)):
                col.image(diff.overlays[v], caption=f"Concept map, probe v{v}", width="stretch")


# ------------------------------------------------------------------ what if a concept were absent
@st.fragment
def whatif_panel():
    """Remove (or dial down) one concept and see the prediction move; reruns only this panel."""
    if st.session_state.get(state.WHATIF_CONCEPT) not in view.whatif_concepts:  # another probe version
        st.session_state.pop(state.WHATIF_CONCEPT, None)
    concept = st.selectbox("Concept to remove", view.whatif_concepts, key=state.WHATIF_CONCEPT,
                           help="Ranked by its share of the evidence, largest first")
    strength = st.slider("Strength", 0, 100, 100, step=5, format="%d%%", key=state.WHATIF_STRENGTH,
                         help="How much of the concept to remove: 100 % removes all of it")
    try:
        with st.spinner("Recomputing without it…"):
            panel = rp.whatif(ctx, view, concept, strength)
    except ConceptLensError as exc:
        st.error(str(exc))
        return
    x0, y0, size = panel.patch
    st.caption(f"On the most suspicious patch ({size} px at {x0}, {y0}), whose probability is the image's.")
    cols = st.columns(2)
    titles = {"activation": "In activation space", "image": "In image space"}
    for col, kind in zip(cols, ("activation", "image")):
        with col, st.container(border=True, key=f"report.whatif.{kind}"):
            st.markdown(f"**{titles[kind]}**")
            st.markdown(f"### {panel.sentences[kind]}")
            st.caption(f"{panel.results[kind].log_odds_sentence()} · {panel.how[kind]}")
            a, b = st.columns(2)
            a.image(panel.images["before"], caption="as reported", width="stretch")
            b.image(panel.images[kind], caption="after", width="stretch")
    for note in panel.notes:
        st.info(note)
    st.plotly_chart(panel.shares, width="stretch", theme=None, key="report.whatif.shares")
    if st.toggle("Lesion map of the whole image before and after", key=state.WHATIF_LESION_MAP):
        with st.spinner("Scanning the whole image twice…"):
            maps = rp.whatif_maps(ctx, view, concept, strength)
        captions = {"before": "as reported", "activation": "activation removed", "image": "region inpainted"}
        for col, name in zip(st.columns(3), ("before", "activation", "image")):
            jpg, score = maps[name]
            col.image(jpg, caption=f"{captions[name]} · score {score:.2f}", width="stretch")


if p is not None and view.whatif_concepts:
    # lazy: the panel computes only while the reader has it open (opening it reruns the page once)
    with st.expander("What if a concept were absent?", key=state.WHATIF_OPEN, on_change="rerun") as box:
        if box.open:
            whatif_panel()

# ------------------------------------------------------------------ the numbers behind the lead
if p is not None:
    with st.expander("Technical details: logit parts, TCAV, probe validation", key="report.technical"):
        if view.concepts:
            st.dataframe(view.concepts, hide_index=True, width="stretch", key="report.concepts",
                         column_config={"attribution share": st.column_config.ProgressColumn(
                             "attribution share", min_value=0.0, max_value=1.0, format="%.2f")})
        st.markdown("**Probe validation** (held-out images)")
        st.dataframe(p.metrics, hide_index=True, width="stretch", key="report.metrics",
                     column_config={"auroc": st.column_config.NumberColumn("AUROC (by image)", format="%.3f")})
