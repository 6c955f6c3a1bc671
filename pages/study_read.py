"""Reading: a pilot-study reader's next case, what its arm shows, the questions, Submit."""
import streamlit as st

from dashboard.ui import ConceptLensError, resources, state
from dashboard.ui.screens import study_questionnaire as sq
from dashboard.ui.screens import study_read as sr
from dashboard.ui.screens import study_session as ss

TILE_HEIGHT = 430  # px, as on the Read page

settings, store, reader = resources.open_study_page("Reading", "reader")

choices = ss.reader_studies(store, reader)
if not choices:
    st.info("You have no cases to read yet. The study coordinator will tell you when your study starts.")
    st.stop()
if len(choices) > 1:
    st.selectbox("Study", [c.name for c in choices], key=state.STUDY_NAME,
                 format_func={c.name: c.label for c in choices}.get)
choice = ss.pick_study(choices, st.session_state.get(state.STUDY_NAME))
flash = st.session_state.get(state.STUDY_FLASH)  # dropped once this run is not restarted (below)
if flash:
    st.success(flash, icon=":material/check:")

try:
    step = ss.next_step(store, choice.name, reader)
    rs = sr.open_step(store, step, reader)
except ConceptLensError as exc:  # NoAssignmentError, ReadingError
    st.error(str(exc))
    st.stop()
st.caption(f"{choice.label} · {ss.progress_text(step)}")


def ask_assessment(form, key, comment_label: str):
    """The assessment questions inside a form (helpfulness and comment only where the arm asks them);
    ``key(question)`` names each widget. Returns the values as typed (``sr.ReadAnswers``)."""
    birads = st.radio("BI-RADS assessment", list(sr.BIRADS), format_func=sr.BIRADS.get, index=None,
                      key=key("birads"))
    malignancy = st.number_input("Probability of malignancy (%)", 0.0, 100.0, value=None, step=1.0,
                                 key=key("malignancy"))
    confidence = st.radio("Confidence in your assessment", list(sr.CONFIDENCE), format_func=sr.CONFIDENCE.get,
                          index=None, horizontal=True, key=key("confidence"))
    helpfulness = None
    if form.helpfulness:
        helpfulness = st.radio("The explanation helped me", list(sr.LIKERT), format_func=sr.LIKERT.get, index=None,
                               horizontal=True, key=key("helpfulness"))
    comment = st.text_area(comment_label, key=key("comment")) if form.free_text else ""
    return sr.ReadAnswers(birads=birads, malignancy=malignancy, confidence=confidence, helpfulness=helpfulness,
                          comment=comment)


def render_correction() -> None:
    """"Correct my last read": a new read that supersedes the last submitted one (both are kept)."""
    last = sr.last_read(store, choice.name, reader)
    if last is None:
        return
    rid = last["read_id"]
    form = sr.correction_form(store, last)
    with st.expander("Correct my last read"):
        st.caption(f"Submitted at {last['submitted_at']:%H:%M:%S} UTC: BI-RADS {last['birads']}, probability of "
                   f"malignancy {last['malignancy']:g} %, confidence {last['confidence']}. A correction is a new "
                   "answer that replaces this one; both are kept.")
        with st.form(f"study_read.correct.{rid}"):
            given = ask_assessment(form, lambda q: f"study_read.c_{q}.{rid}", "Comment")
            reason = st.text_input("Why the correction?", key=f"study_read.c_reason.{rid}")
            if st.form_submit_button("Submit correction", key=f"study_read.c_submit.{rid}"):
                try:
                    sr.correct(store, last, reader, form, given, reason=reason)
                except ConceptLensError as exc:  # AnswerError lists the answers at fault; ReadingError
                    st.error(str(exc))
                else:
                    st.session_state[state.STUDY_FLASH] = "Your correction was saved; it replaces your last read."
                    st.rerun()


if step.state != "read":
    st.session_state.pop(state.STUDY_FLASH, None)
    if step.state == "questionnaire":
        st.info(step.message)
        st.page_link("pages/study_questionnaire.py", label="Answer the questionnaire", icon=":material/checklist:")
    elif step.state == "complete":
        st.success(step.message)
    else:  # washout, closed
        st.info(sq.next_text(step))
    render_correction()
    st.stop()

# ------------------------------------------------------------------ the case to read
a, vis, form, read_id = step.assignment, rs.vis, rs.form, rs.read_id
ctx = resources.get_context(card=vis.model_card)


def view_event(kind: str) -> None:
    """A viewer control changed: recorded with the read, timed on the server."""
    keys = {"window_level": ("mode", "preset", "center", "width"), "overlay_toggle": ("overlay", "method", "opacity")}
    payload = {k: st.session_state.get(f"study_read.{k}") for k in keys.get(kind, ())}
    if kind == "image_switch":
        payload = {"image_id": st.session_state.get(f"study_read.report_image.{read_id}")}
    sr.record_view_event(store, read_id, reader, kind, payload)


with st.sidebar:
    st.subheader("Window / level")
    mode = st.radio("Window", ["file", "auto", "manual"], key="study_read.mode", horizontal=True,
                    format_func={"file": "File presets", "auto": "Auto", "manual": "Manual"}.get,
                    on_change=view_event, args=("window_level",))
    presets = st.session_state.get(state.STUDY_PRESETS, [])
    preset = st.selectbox("Preset", range(len(presets)) if presets else [0], key="study_read.preset",
                          format_func=lambda i: presets[i] if i < len(presets) else "file default",
                          disabled=mode != "file", on_change=view_event, args=("window_level",))
    c1, c2 = st.columns(2)
    center = c1.number_input("Centre", value=2048.0, step=50.0, key="study_read.center", disabled=mode != "manual",
                             on_change=view_event, args=("window_level",))
    width = c2.number_input("Width", min_value=1.0, value=4096.0, step=50.0, key="study_read.width",
                            disabled=mode != "manual", on_change=view_event, args=("window_level",))
    overlay, method, opacity = "none", "gradcam", 0.5
    if vis.attribution:
        st.subheader("Overlay")
        overlay = st.radio("Overlay", sr.STUDY_OVERLAYS, key="study_read.overlay", horizontal=True,
                           format_func={"none": "None", "attribution": "Attribution"}.get,
                           on_change=view_event, args=("overlay_toggle",))
        method = st.selectbox("Attribution method", sr.VIEWER_METHODS, key="study_read.method",
                              disabled=overlay != "attribution", on_change=view_event, args=("overlay_toggle",))
        opacity = st.slider("Opacity", 0.0, 1.0, 0.55, 0.05, key="study_read.opacity", disabled=overlay == "none",
                            on_change=view_event, args=("overlay_toggle",))

window = sr.WindowChoice(mode, int(preset or 0), float(center), float(width))
kept = st.session_state.get(state.STUDY_CLICK)
click = tuple(kept[1:]) if kept and kept[0] == read_id else None
with st.spinner("Preparing the images…"):
    case = sr.load_case(ctx, a.case_id, vis, window, overlay, method, opacity, click)
if case.presets != presets:  # first view of a case: offer its own windows at once
    st.session_state[state.STUDY_PRESETS] = case.presets
    st.rerun()
st.session_state.pop(state.STUDY_FLASH, None)  # shown by this run

head, score_box = st.columns([3, 1])
head.subheader(f"{sr.case_label(step)} · session {step.session_index + 1} of {step.n_sessions}")
if case.score is not None:
    score_box.metric("AI score", f"{case.score:.2f}", help="The model's probability of a lesion (highest over the "
                                                         "images of the case).")
for note in case.notes:
    st.warning(note)


def tile_width(tile) -> int:
    h, w = tile.rgb.shape[:2]
    return max(120, int(TILE_HEIGHT * w / h))


values, shown = [], []
for r, row in enumerate(case.rows):
    with st.container(horizontal=True, horizontal_alignment="center", gap="small", key=f"study_read.row{r}"):
        for slot, tile in zip(("R", "L"), row):
            if tile is None:
                with st.container(width=300, height=TILE_HEIGHT, border=True):
                    st.caption(f"no {slot} image for this view")
                continue
            with st.container(width=tile_width(tile) if tile.rgb is not None else 300):
                if tile.error:
                    st.error(f"{tile.label}: {tile.error}")
                    continue
                if form.location:
                    values.append(resources.image_coordinates(tile.rgb, key=f"study_read.img.{read_id}.{tile.image_id}",
                                                              width=tile_width(tile)))
                    shown.append(tile)
                else:
                    st.image(tile.rgb, width=tile_width(tile))
                score = "" if tile.score is None else f" · AI score {tile.score:.2f}"
                st.caption(f"{tile.label}{score} · C {tile.window[0]:g} / W {tile.window[1]:g}")
for tile in case.extra:
    if tile.error:
        st.error(f"{tile.label}: {tile.error}")
    else:
        st.image(tile.rgb, caption=tile.label, width=tile_width(tile))

if form.location:
    new = sr.latest_click(shown, values, after=st.session_state.get(state.STUDY_SEEN_CLICK, 0.0))
    if new is not None:
        st.session_state[state.STUDY_SEEN_CLICK] = new[0]
        st.session_state[state.STUDY_CLICK] = (read_id, *new[1])
        st.rerun()  # the marker shows on the image
    c1, c2 = st.columns([3, 1])
    if click is None:
        c1.caption("Optional: click the most suspicious location on an image.")
    else:
        label = next((t.label for t in case.tiles if t.image_id == click[0]), click[0])
        c1.caption(f"Most suspicious location: {label} at ({click[1]:.0f}, {click[2]:.0f}) model px.")
        if c2.button("Clear location", key=f"study_read.clear.{read_id}"):
            st.session_state.pop(state.STUDY_CLICK, None)
            st.rerun()

# ------------------------------------------------------------------ the arm's concept report (pinned probe)
if vis.concept_report and case.model_ok:
    st.subheader("Concept report")
    tiles = [t for t in case.tiles if t.error is None]
    names = {t.image_id: t.label for t in tiles}
    if names:
        image_id = st.selectbox("Image", list(names), format_func=names.get, key=f"study_read.report_image.{read_id}",
                                on_change=view_event, args=("image_switch",))
        try:
            with st.spinner("Preparing the concept report…"):
                rep = sr.pinned_report(ctx, vis, image_id)
        except ConceptLensError as exc:  # ReportError: the pinned probe is missing
            st.error(str(exc))
        else:
            st.caption(f"Concept probe v{rep.version}, fixed for this study."
                       + (f" P({rep.target}) {rep.probability:.2f}." if rep.probability is not None else ""))
            left, right = st.columns([1, 1], gap="large")
            if rep.overlay is not None:
                left.image(rep.overlay, caption="Where each concept is (probability ≥ 0.5)", width="stretch")
            right.dataframe(rep.legend, hide_index=True, width="stretch", key=f"study_read.legend.{read_id}")
            st.dataframe(rep.rows, hide_index=True, width="stretch", key=f"study_read.concepts.{read_id}",
                         column_config={"attribution share": st.column_config.ProgressColumn(
                             "attribution share", min_value=0.0, max_value=1.0, format="%.2f")})

# ------------------------------------------------------------------ optional drawing around the location
with st.expander("Outline a finding (optional)"):
    if click is None:
        st.caption("Click the most suspicious location on an image first: the patch around it opens here.")
    else:
        try:
            patch = sr.drawing_patch(ctx, click, window)
        except ConceptLensError as exc:
            st.error(str(exc))
        else:
            c1, c2 = st.columns([1, 1])
            concept = c2.selectbox("Concept", patch.concepts, key="study_read.concept")
            tool = c2.radio("Tool", ["polygon", "freedraw", "rect"], horizontal=True, key="study_read.tool",
                            format_func={"polygon": "Polygon", "freedraw": "Freehand", "rect": "Rectangle"}.get)
            nonce = st.session_state.get(state.STUDY_DRAW_NONCE, 0)
            colour = patch.colours.get(concept, "#00e676")
            r = patch.view.ref
            with c1:
                result = resources.canvas(patch.view.background, fill_color=colour + "55", stroke_color=colour,
                                          stroke_width=2, drawing_mode=tool, width=patch.view.canvas_size,
                                          height=patch.view.canvas_size,
                                          key=f"study_read.canvas.{read_id}.{r.image_id}.{r.x0}.{r.y0}.{nonce}")
            if c2.button(f"Save drawing as {concept}", key=f"study_read.save_drawing.{read_id}"):
                try:
                    sr.save_study_drawing(ctx, read_id, reader, patch, concept, result.json_data,
                                          result.background_fit)
                except ConceptLensError as exc:  # DrawingError (nothing drawn), ValidationError, ReadLockedError
                    c2.error(str(exc))
                else:
                    st.session_state[state.STUDY_DRAW_NONCE] = nonce + 1
                    st.session_state[state.STUDY_FLASH] = f"Drawing of {concept} saved."
                    st.rerun()
    mine = sr.own_drawings(store, choice.name, reader, [t.image_id for t in case.tiles])
    if mine:
        st.dataframe(mine, hide_index=True, width="stretch", key=f"study_read.mine.{read_id}")

# ------------------------------------------------------------------ the questions
st.subheader("Your assessment")
with st.form(f"study_read.form.{read_id}"):
    given = ask_assessment(form, lambda q: f"study_read.{q}.{read_id}", "Comment (optional)")
    submitted = st.form_submit_button("Submit read", type="primary", key=f"study_read.submit.{read_id}")
if submitted:
    ans = sr.answers(form, given, click)
    try:
        sr.submit(store, read_id, reader, ans)
    except ConceptLensError as exc:  # AnswerError names every answer at fault; ReadLockedError; ReadingError
        st.error(str(exc))
    else:
        st.session_state.pop(state.STUDY_CLICK, None)
        st.session_state[state.STUDY_FLASH] = f"{sr.case_label(step)} submitted. You cannot change it any more, " \
                                              "only correct it (below the next case)."
        st.rerun()
render_correction()
