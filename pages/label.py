"""Label concepts: draw a concept on the patch; the matching units show at once; Save labels them."""
import streamlit as st

from dashboard.ui import ConceptLensError, resources, state
from dashboard.ui.screens import label as lb

ctx = resources.get_context()
st.title("Label concepts")

# ------------------------------------------------------------------ the reader, once per session
reader = st.session_state.get(state.READER)
if not reader:
    st.info("Who is reading? Your name is recorded with every drawing you save.")
    c1, c2 = st.columns([3, 1])
    name = c1.text_input("Reader name", key="label.reader_name")
    if c2.button("Start labeling", key="label.start", type="primary"):
        try:
            st.session_state[state.READER] = lb.start_session(ctx, name)
            st.rerun()
        except ConceptLensError as exc:  # the store's ValidationError says what is wrong
            st.error(str(exc))
    st.stop()

raw = st.session_state.get(state.PATCH)
view = lb.load_patch(ctx, lb.PatchRef.from_tuple(raw) if raw else None)
if view is None:
    st.info("No patch is open. Pick a suspicious patch or a point on the Read page.")
    st.page_link("pages/read.py", label="Go to Read", icon=":material/visibility:")
    st.stop()

r = view.ref
# the Report opens on the image being labeled; its evidence is prepared while the reader draws
st.session_state[state.CASE_ID] = view.image["case_id"]
st.session_state[state.IMAGE_ID] = r.image_id
lb.prepare_patch(ctx, r)  # the first drawing then only waits for its own IoUs
st.caption(f"Reader **{reader}** · {view.label} · patch ({r.x0}, {r.y0}) size {r.size} model px"
           + (" · shown mirrored (right breast)" if view.mirrored else "") + f" · layer `{view.layer}`")
for note in view.notes:
    st.warning(note)
if state.LABEL_GROUP_NEXT in st.session_state:  # a concept was just added: show its group
    st.session_state[state.LABEL_GROUP] = st.session_state.pop(state.LABEL_GROUP_NEXT)
flash = st.session_state.get(state.LABEL_FLASH)
if flash and flash[1] == st.session_state.get(state.LABEL_GROUP):
    st.success(flash[0])


def save_drawing(view, match, concept: str, reader: str, nonce: int, retrain: bool) -> None:
    """Save's callback: runs before the next script run, so one run shows the result and a fresh
    canvas (no second run after an st.rerun)."""
    try:
        res = lb.save(resources.get_context(), view, match, concept, reader, retrain=retrain)
    except ConceptLensError as exc:  # UnknownConceptError, ValidationError, StoreError: shown by the next run
        st.session_state[state.LABEL_SAVE_ERROR] = str(exc)
        return
    st.session_state[state.LABEL_SAVED] = {"concept": res.concept, "n_labeled": res.n_labeled, "n_above": res.n_above,
                                       "tau": match.tau, "nonce": nonce + 1, "probe_version": res.probe_version,
                                       "probe_drawings": res.probe_drawings, "retrain_error": res.retrain_error}
    st.session_state[state.CANVAS_NONCE] = nonce + 1  # a fresh canvas for the next drawing


left, right = st.columns([1.1, 1], gap="large")
with right:
    st.subheader("Concept")
    groups = list(view.palette)
    group = st.selectbox("Lexicon group", groups, key=state.LABEL_GROUP, persist_state=state.PERSIST)
    concepts = view.palette[group]
    names = [c["name"] for c in concepts]
    # a kept concept of another group is not among these options: streamlit resets it to the first
    concept = st.radio("Concept", names, key=state.LABEL_CONCEPT, persist_state=state.PERSIST,
                       captions=[c["description"] for c in concepts])
    colour = next(c["colour"] for c in concepts if c["name"] == concept)
    with st.expander("Add custom concept"):
        new_name = st.text_input("Name", key="label.new_name", placeholder="e.g. skin-thickening")
        new_group = st.text_input("Lexicon group", value="custom", key="label.new_group")
        new_colour = st.color_picker("Colour", "#00bcd4", key="label.new_colour")
        new_desc = st.text_input("Description", key="label.new_desc")
        if st.button("Add concept", key="label.add_concept"):
            try:
                added, added_group = lb.add_concept(ctx, new_name, new_group, new_colour, new_desc, reader)
            except ConceptLensError as exc:  # ValidationError: the name says what is wrong
                st.error(str(exc))
            else:
                st.session_state[state.LABEL_FLASH] = (f"Added {added!r} to {added_group!r}.", added_group)
                st.session_state[state.LABEL_GROUP_NEXT] = added_group
                st.rerun()

with left:
    tool = st.radio("Tool", list(lb.DRAW_TOOLS), format_func=lb.DRAW_TOOLS.get, horizontal=True, key=state.LABEL_TOOL,
                    persist_state=state.PERSIST)
    st.caption("Polygon: click the vertices, then click the first vertex again to close it. "
               "Undo, redo and clear are on the canvas toolbar (hover the canvas).")
    nonce = st.session_state.get(state.CANVAS_NONCE, 0)
    result = resources.canvas(
        view.background, fill_color=colour + "55", stroke_color=colour, stroke_width=2, drawing_mode=tool,
        width=view.canvas_size, height=view.canvas_size,
        key=f"label.canvas.{r.image_id}.{r.x0}.{r.y0}.{r.size}.{nonce}")

drawings = None
try:
    drawings = lb.drawings_from_canvas(view, result.json_data, result.background_fit)
except ConceptLensError as exc:  # DrawingError: empty, degenerate or unsupported drawing
    with right:
        st.info(str(exc))

# kept until the next drawing: the fresh canvas reports itself with a rerun of its own
saved = st.session_state.get(state.LABEL_SAVED)
if saved and saved["nonce"] == nonce and not drawings:
    probe = (f" Concept probe v{saved['probe_version']} retrained on {saved['probe_drawings']} drawing(s): "
             "see the Report." if saved.get("probe_version") else "")
    st.success(f"Saved {saved['concept']!r}: labeled {saved['n_labeled']} unit(s) "
               f"({saved['n_above']} above IoU {saved['tau']:g}).{probe}", icon=":material/check:")
    if saved.get("retrain_error"):
        st.warning(f"The probes were not retrained: {saved['retrain_error']}")

save_error = st.session_state.pop(state.LABEL_SAVE_ERROR, None)
if save_error:  # UnknownConceptError, ValidationError, StoreError from the last Save
    st.error(save_error)

match = None
if drawings:
    try:
        with st.spinner("Matching units…"):
            match = lb.match(ctx, view, drawings)
    except ConceptLensError as exc:  # ModelUnavailable, EngineNotReady, DrawingError (empty mask)
        st.error(str(exc))

if match is not None:
    with right:
        st.subheader("Best matching unit")
        c1, c2 = st.columns([1, 1])
        c1.image(match.best_rgb, caption=f"unit {match.best_unit}: activation (heat), above threshold (yellow), "
                                         "your drawing (blue outline)", width="stretch")
        c2.metric("Best unit", f"#{match.best_unit}", help="unit index in the concept layer")
        c2.metric("IoU", f"{match.best_iou:.2f}")
        c2.metric(f"Units with IoU > {match.tau:g}", len(match.units_above))
        retrain = st.toggle("Retrain probes on Save", value=True, key=state.LABEL_RETRAIN, persist_state=state.PERSIST,
                            help="Fit a new concept probe version with this drawing, so the Report shows it.")
        st.button(f"Save as {concept}", key="label.save", type="primary", on_click=save_drawing,
                  args=(view, match, concept, reader, nonce, retrain))
    st.plotly_chart(match.figure, key="label.units_map", width="stretch")
    if match.table:
        st.dataframe(match.table, hide_index=True, width="stretch", key="label.matched")

if view.annotations:
    with st.expander(f"Drawings on this image ({len(view.annotations)})"):
        st.dataframe(view.annotations, hide_index=True, width="stretch", key="label.previous")

# the Report opens on this image: its evidence and its report under the latest probe version (a
# Save just retrained it) are prepared in the background, started once this page is all sent, so
# the head start never delays what the reader waits for here
lb.prepare_report(ctx, r.image_id)
