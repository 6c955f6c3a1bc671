"""Label concepts: draw a concept on the patch; the matching units show at once; Save labels them."""
import streamlit as st

from dashboard.ui import ConceptLensError, resources, state
from dashboard.ui.screens import label as lb
from dashboard.ui.text import escape_markdown

ctx = resources.get_context()
st.title("Label concepts", help="Outline a concept on the patch: the units that fire on it show at once, and Save labels them.")
resources.warmup_notice(("statistics",), key="label", rerun=False)  # never a rerun while the reader draws


# ------------------------------------------------------------------ callbacks (run before the next run)
# No programmatic rerun on this page: a button's work runs in its callback, so the run it starts
# already shows the result, and a click made meanwhile is never dropped by a rerun.
def start_session() -> None:
    try:
        st.session_state[state.READER] = lb.start_session(resources.get_context(),
                                                          st.session_state.get("label.reader_name", ""))
    except ConceptLensError as exc:  # the store's ValidationError says what is wrong
        st.session_state[state.LABEL_SIGN_IN_ERROR] = str(exc)


def add_concept(reader: str) -> None:
    get = st.session_state.get
    try:
        added, group = lb.add_concept(resources.get_context(), get("label.new_name", ""), get("label.new_group", ""),
                                      get("label.new_colour", "#00bcd4"), get("label.new_desc", ""), reader)
    except ConceptLensError as exc:  # ValidationError: the name says what is wrong
        st.session_state[state.LABEL_ADD_ERROR] = str(exc)
    else:
        st.session_state[state.LABEL_FLASH] = (f"Added {added!r} to {group!r}.", group)
        st.session_state[state.LABEL_GROUP] = group  # callbacks run before the widgets: show its group


def save_drawing(record: lb.SaveRecord, keys: tuple, view, match, concept: str, reader: str, retrain: bool) -> None:
    """Save's callback. ``record`` is this patch's SaveRecord object, updated in place (no session-state
    write after the store's write, so nothing can stop the run between the two); a second click on
    the same drawing stores nothing."""
    lb.save_once(resources.get_context(), record, keys, view, match, concept, reader, retrain=retrain)


# ------------------------------------------------------------------ the reader, once per session
reader = st.session_state.get(state.READER)
if not reader:
    st.info("Who is reading? Your name is recorded with every drawing you save.")
    c1, c2 = st.columns([3, 1])
    c1.text_input("Reader name", key="label.reader_name")
    c2.button("Start labeling", key="label.start", type="primary", on_click=start_session)
    sign_in_error = st.session_state.pop(state.LABEL_SIGN_IN_ERROR, None)
    if sign_in_error:
        st.error(sign_in_error)
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
st.caption(f"Reader **{escape_markdown(reader)}** · {escape_markdown(view.label)} · patch ({r.x0}, {r.y0}) size {r.size} model px"
           + (" · shown mirrored (right breast)" if view.mirrored else "") + f" · layer `{view.layer}`")
for note in view.notes:
    st.warning(note)
record = st.session_state.setdefault(state.LABEL_SAVES, {}).setdefault(r.as_tuple(), lb.SaveRecord())


lb_per_unit = 3  # exemplars per unit in the gallery


def pick_concept(ctx, reader: str) -> tuple[str, str]:
    """The lexicon group, the concept radio and "Add custom concept"; returns the concept chosen and its colour."""
    flash = st.session_state.get(state.LABEL_FLASH)
    if flash and flash[1] == st.session_state.get(state.LABEL_GROUP):
        st.success(flash[0])
    st.subheader("Concept")
    palette = lb.palette(ctx)  # read here: a concept just added is in it
    group = st.selectbox("Lexicon group", list(palette), key=state.LABEL_GROUP, persist_state=state.PERSIST)
    concepts = palette[group]
    names = [c["name"] for c in concepts]
    # a kept concept of another group is not among these options: streamlit resets it to the first
    concept = st.radio("Concept", names, key=state.LABEL_CONCEPT, persist_state=state.PERSIST,
                       captions=[c["description"] for c in concepts])
    colour = next(c["colour"] for c in concepts if c["name"] == concept)
    with st.expander("Add custom concept"):
        st.text_input("Name", key="label.new_name", placeholder="e.g. skin-thickening")
        st.text_input("Lexicon group", value="custom", key="label.new_group")
        st.color_picker("Colour", "#00bcd4", key="label.new_colour")
        st.text_input("Description", key="label.new_desc")
        st.button("Add concept", key="label.add_concept", on_click=add_concept, args=(reader,))
        add_error = st.session_state.pop(state.LABEL_ADD_ERROR, None)
        if add_error:
            st.error(add_error)
    return concept, colour


def show_match(ctx, right, match, concept: str, save_args: tuple) -> None:
    """The best unit, its IoU and the units above the threshold (in the ``right`` column), the
    "Save as ``concept``" button (``save_drawing(*save_args, retrain)``), the best units' top
    exemplars and the units map."""
    with right:
        st.subheader("Best matching unit")
        c1, c2 = st.columns([1, 1])
        c1.image(match.best_rgb, caption=f"unit {match.best_unit}: activation (heat), above threshold (yellow), "
                                         "your drawing (blue outline)", width="stretch")
        c2.metric("Best unit", f"#{match.best_unit}", help="unit index in the concept layer")
        c2.metric("IoU", f"{match.best_iou:.2f}")
        c2.metric(f"Units with IoU > {match.tau:g}", len(match.units_above))
        retrain = st.toggle("Retrain probes on Save", value=True, key=state.LABEL_RETRAIN,
                            persist_state=state.PERSIST,
                            help="Fit a new concept probe version with this drawing, so the Report shows it.")
        st.button(f"Save as {concept}", key="label.save", type="primary", on_click=save_drawing,
                  args=(*save_args, retrain))
    gallery, pending = lb.unit_gallery(ctx, match)
    if gallery or pending:
        st.markdown("**The best units' top exemplars** (where each fires most in the data set)")
        for g in gallery:
            cols = st.columns([1] + [2] * lb_per_unit)
            cols[0].markdown(f"**#{g['unit']}**  \nIoU {g['iou']:.2f}" + (f"  \nnow: {g['label']}" if g["label"] else ""))
            for col, (rgb, caption) in zip(cols[1:], g["exemplars"]):
                col.image(rgb, caption=caption, width="stretch")
        if pending:
            st.caption(f"Exemplars of {pending} more unit(s) are being prepared; they show with your next "
                       "drawing or Save.")
    st.plotly_chart(match.figure, key="label.units_map", width="stretch")
    if match.table:
        st.dataframe(match.table, hide_index=True, width="stretch", key="label.matched")


@st.fragment
def drawing_panel(view: lb.PatchView, reader: str, record: lb.SaveRecord) -> None:
    """The palette, the canvas and the matched units: a drawing, a concept or a Save reruns this
    part only, not the whole page."""
    ctx = resources.get_context()
    r = view.ref
    left, right = st.columns([1.1, 1], gap="large")
    with right:
        concept, colour = pick_concept(ctx, reader)

    with left:
        tool = st.radio("Tool", list(lb.DRAW_TOOLS), format_func=lb.DRAW_TOOLS.get, horizontal=True,
                        key=state.LABEL_TOOL, persist_state=state.PERSIST)
        st.caption("Polygon: click the vertices, then click the first vertex again to close it. "
                   "Undo, redo and clear are on the canvas toolbar (hover the canvas). Saved outlines stay "
                   "on the canvas; only a new outline is matched and saved.")
        # one key per patch: Save never remounts the canvas, so a drawing started at once is kept
        result = resources.canvas(
            view.background_png or view.background, fill_color=colour + "55", stroke_color=colour, stroke_width=2, drawing_mode=tool,
            width=view.canvas_size, height=view.canvas_size, key=f"label.canvas.{r.image_id}.{r.x0}.{r.y0}.{r.size}")

    fresh, keys = lb.unsaved_objects(result.json_data, record)
    drawings = None
    try:
        drawings = lb.drawings_from_canvas(view, fresh, result.background_fit)
    except ConceptLensError as exc:  # DrawingError: empty, degenerate or unsupported drawing
        if not record.last or keys:
            with right:
                st.info(str(exc))

    if record.last and not keys:  # the last Save, until the next drawing
        with right:
            st.success(lb.saved_message(record.last), icon=":material/check:")
            if record.last.get("retrain_error"):
                st.warning(f"The probes were not retrained: {record.last['retrain_error']}")
    if record.error:  # UnknownConceptError, ValidationError, StoreError from the last Save
        with right:
            st.error(record.error)
        record.error = None

    match = None
    if drawings:
        try:
            with st.spinner("Matching units…"):
                match = lb.match(ctx, view, drawings)
        except ConceptLensError as exc:  # ModelUnavailable, EngineNotReady, DrawingError (empty mask)
            if resources.warming_up("statistics", ctx.card_name):
                with right:  # no rerun while the reader draws: the reader asks, the outline is kept
                    st.info("The dataset statistics (each unit's activation threshold) are still being "
                            "prepared in the background. When the notice above says Ready, press **Match "
                            "again**: your outline is kept.")
                    st.button("Match again", key="label.match_again", icon=":material/refresh:")
            else:
                st.error(str(exc))

    if match is not None:
        show_match(ctx, right, match, concept, (record, keys, view, match, concept, reader))

    annotations = lb.list_drawings(ctx, r.image_id)
    if annotations:
        with st.expander(f"Drawings on this image ({len(annotations)})"):
            st.dataframe(annotations, hide_index=True, width="stretch", key="label.previous")

    # the Report opens on this image: its evidence and its report under the latest probe version (a
    # Save just retrained it) are prepared in the background, started once this part is all sent,
    # so the head start never delays what the reader waits for here
    lb.prepare_report(ctx, r.image_id, saved=bool(record.last))


drawing_panel(view, reader, record)
