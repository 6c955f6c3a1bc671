"""Read: the case hung RCC | LCC over RMLO | LMLO, window/level, overlays, suspicious patches."""
import streamlit as st

from dashboard.ui import ConceptLensError, resources, state
from dashboard.ui.screens import read as rd

ctx = resources.get_context()
# a case from another domain than the model's gets the card trained on its domain, once per case opened
# (the reader may switch back in the sidebar: that choice then stands for this case)
choice = rd.case_card_choice(ctx, st.session_state.get(state.CASE_ID))
if st.session_state.get(state.READ_CARD_CASE) != st.session_state.get(state.CASE_ID):
    st.session_state[state.READ_CARD_CASE] = st.session_state.get(state.CASE_ID)
    if choice.switch:
        st.session_state[state.MODEL_CARD] = choice.suggested
        ctx = resources.get_context()
        choice = rd.case_card_choice(ctx, st.session_state.get(state.CASE_ID))

TILE_HEIGHT = 430  # px: the four views fit on a laptop screen

# a click on "Label this patch" / "Label patch here" was taken by its callback: open the patch at
# once, before anything is computed (no programmatic rerun anywhere on this page, so no click is lost)
opened = st.session_state.pop(state.READ_OPEN, None)
if opened:
    st.session_state[state.PATCH] = opened
    st.switch_page("pages/label.py")

# a new click on an image (its value is in the session before anything is drawn) opens the patch
# centred there at once; a click once taken is never taken again
click = rd.new_click(st.session_state, st.session_state.get(state.READ_SEEN_CLICK))
if click is not None:
    image_id, value = click
    st.session_state[state.READ_SEEN_CLICK] = value["unix_time"]
    try:
        ref = rd.patch_from_click(ctx, image_id, value)
    except ConceptLensError as exc:  # ReadingError: outside the image
        st.session_state[state.READ_POINT_ERROR] = str(exc)
    else:
        rd.prepare_labeling(ctx, ref)
        st.session_state[state.PATCH] = ref.as_tuple()
        st.switch_page("pages/label.py")


def open_patch(ref: rd.PatchRef) -> None:
    """The Label buttons' callback: runs before the next script run, which then opens the patch."""
    st.session_state[state.READ_OPEN] = ref.as_tuple()
    rd.prepare_labeling(resources.get_context(), ref)


def open_listed_patch(patches: list[dict]) -> None:
    """"Label this patch": the patch picked in the box now (read here, not when the button was drawn)."""
    p = patches[min(int(st.session_state.get("read.patch") or 0), len(patches) - 1)]
    open_patch(rd.PatchRef(p["image_id"], p["x0"], p["y0"], p["size"]))


def step_case(step: int) -> None:
    """Next/previous case (buttons and their shortcuts N and P)."""
    ids = st.session_state.get("read.case_ids") or []
    current = st.session_state.get(state.CASE_ID)
    if ids:
        i = ids.index(current) if current in ids else 0
        st.session_state[state.CASE_ID] = ids[(i + step) % len(ids)]
        st.session_state.pop(state.IMAGE_ID, None)


def step_patch(step: int, n: int) -> None:
    """Next/previous suspicious patch in the box (shortcuts J and K)."""
    if n:
        st.session_state["read.patch"] = (int(st.session_state.get("read.patch") or 0) + step) % n


# the case's own windows name the presets before the widgets exist (one run per view)
presets = rd.case_presets(ctx, st.session_state.get(state.CASE_ID))

# the manual centre/width start from the window in use (set before the widgets exist)
shown = st.session_state.get(state.READ_WINDOW_SHOWN)
if shown and st.session_state.get(state.READ_WINDOW_MODE, "file") != "manual":
    st.session_state[state.READ_CENTER], st.session_state[state.READ_WIDTH] = float(shown[0]), float(shown[1])

# ------------------------------------------------------------------ controls
with st.sidebar:
    st.session_state[state.READ_CARD] = choice.current
    st.selectbox("Model for this case", choice.options, key=state.READ_CARD,
                 help="Cards that give a lesion score; the one trained on this case's kind of image is picked "
                      "when a case opens" + (f" ({choice.suggested})" if choice.suggested else ""),
                 on_change=lambda: st.session_state.update({state.MODEL_CARD: st.session_state[state.READ_CARD]}))
    st.subheader("Window / level")
    mode = st.radio("Window", ["file", "auto", "manual"], key=state.READ_WINDOW_MODE,
                    persist_state=state.PERSIST, horizontal=True,
                    format_func={"file": "File presets", "auto": "Auto", "manual": "Manual"}.get)
    preset = st.selectbox("Preset", range(len(presets)) if presets else [0], key=state.READ_PRESET,
                          persist_state=state.PERSIST,
                          format_func=lambda i: presets[i] if i < len(presets) else "file default",
                          disabled=mode != "file")
    c1, c2 = st.columns(2)
    # first values through the session (the page writes them too): one source, no duplicate default
    st.session_state.setdefault(state.READ_CENTER, 2048.0)
    st.session_state.setdefault(state.READ_WIDTH, 4096.0)
    center = c1.number_input("Centre", step=50.0, key=state.READ_CENTER, persist_state=state.PERSIST,
                             disabled=mode != "manual")
    width = c2.number_input("Width", min_value=1.0, step=50.0, key=state.READ_WIDTH, persist_state=state.PERSIST,
                            disabled=mode != "manual")
    st.subheader("Overlay")
    overlay = st.radio("Overlay", rd.OVERLAYS, key=state.READ_OVERLAY, persist_state=state.PERSIST, horizontal=True,
                       format_func={"none": "None", "lesion map": "Lesion map", "attribution": "Attribution"}.get)
    method = st.selectbox("Attribution method", rd.VIEWER_METHODS, key=state.READ_METHOD, persist_state=state.PERSIST,
                          disabled=overlay != "attribution")
    opacity = st.slider("Opacity", 0.0, 1.0, 0.55, 0.05, key=state.READ_OPACITY,
                        persist_state=state.PERSIST, disabled=overlay == "none")

window = rd.WindowChoice(mode, int(preset or 0), float(center), float(width))
with st.spinner("Preparing the images…"):
    view = rd.load_reading(ctx, st.session_state.get(state.CASE_ID), window, overlay, method, opacity)
first = next((t for t in view.tiles if t.error is None), None)
if first is not None:
    st.session_state[state.READ_WINDOW_SHOWN] = first.window[:2]

if view.case is None:
    st.title("Read")
    st.info("The store has no cases yet. Build the demo set or ingest a folder on the Model and data page.")
    st.stop()

case = view.case
st.session_state[state.READ_CASE] = case["case_id"]
head, pick = st.columns([3, 1])
head.title(f"Read · {case['case_id']}")
head.caption(f"{case['source']} · truth: {case['label']} · {case['description']}")
pick.selectbox("Case", view.case_ids, key=state.READ_CASE,
               on_change=lambda: st.session_state.update({state.CASE_ID: st.session_state[state.READ_CASE]}))
st.session_state["read.case_ids"] = view.case_ids
with pick.container(horizontal=True, gap="small"):
    st.button("Previous case", key="read.prev_case", on_click=step_case, args=(-1,), shortcut="P",
              icon=":material/arrow_back:")
    st.button("Next case", key="read.next_case", on_click=step_case, args=(1,), shortcut="N",
              icon=":material/arrow_forward:")
head.caption("Click a point on any image to label the patch centred there. Shortcuts: N / P next or previous "
             "case, J / K next or previous suspicious patch, L label it.")
for note in view.notes:
    st.warning(note)
point_error = st.session_state.pop(state.READ_POINT_ERROR, None)
if point_error:
    st.error(point_error)

# ------------------------------------------------------------------ the hanging
# each row R | L side by side and centred, so the two chest walls meet in the middle
def tile_width(tile) -> int:
    h, w = tile.rgb.shape[:2]
    return max(120, int(TILE_HEIGHT * w / h))


def clickable(tile) -> None:
    """A hung image that opens the patch centred where it is clicked, with its caption."""
    width = tile_width(tile)
    with st.container(width=width, gap=None, key=f"read_tile_{tile.laterality}{tile.view}_{tile.image_id}"):
        resources.image_coordinates(tile.rgb, key=f"read.img.{tile.image_id}", width=width, jpeg=tile.jpeg)
        score = "" if tile.score is None else f" · P(lesion) {tile.score:.2f}"
        st.caption(f"{tile.label}{score} · window {tile.window[2] or ''} C {tile.window[0]:g} / W {tile.window[1]:g}")


for r, row in enumerate(view.rows):
    shown_tiles = [t for t in row if t is not None and t.error is None]
    slot_w = tile_width(shown_tiles[0]) if shown_tiles else 300
    with st.container(horizontal=True, horizontal_alignment="center", gap="small", key=f"read.row{r}"):
        for slot, tile in zip(("R", "L"), row):
            if tile is None:
                with st.container(width=slot_w, height=TILE_HEIGHT, border=True):
                    st.caption(f"no {slot} image for this view")
            elif tile.error:
                with st.container(width=slot_w):
                    st.error(f"{tile.label}: {tile.error}")
            else:
                clickable(tile)
if view.extra:
    st.subheader("Other views")
    with st.container(horizontal=True, horizontal_alignment="center", gap="small", key="read.extra"):
        for tile in view.extra:
            if tile.error:
                st.error(f"{tile.label}: {tile.error}")
            else:
                clickable(tile)

# ------------------------------------------------------------------ pick a region to label
st.subheader("Suspicious patches")
st.caption("Patch coordinates are model pixels (chest wall left). Pick one to label its concepts, "
           "or click a point on an image above.")
if view.patches:
    st.dataframe(view.patches, key="read.patches", hide_index=True, width="stretch",
                 column_order=["view", "rank", "x0", "y0", "size", "probability", "image_id"],
                 column_config={"probability": st.column_config.ProgressColumn(
                     "P(lesion)", min_value=0.0, max_value=1.0, format="%.2f")})
    labels = [f"{p['view']} #{p['rank']} at ({p['x0']}, {p['y0']}) · {p['probability']:.2f}" for p in view.patches]
    c1, c2 = st.columns([3, 1])
    c1.selectbox("Patch", range(len(labels)), format_func=labels.__getitem__, key="read.patch")
    c2.button("Label this patch", key="read.open_patch", type="primary", on_click=open_listed_patch,
              args=(view.patches,), shortcut="L")
    with c2.container(horizontal=True, gap="small"):
        st.button("Previous patch", key="read.prev_patch", on_click=step_patch, args=(-1, len(labels)),
                  shortcut="K", type="tertiary")
        st.button("Next patch", key="read.next_patch", on_click=step_patch, args=(1, len(labels)),
                  shortcut="J", type="tertiary")
elif not ctx.model_ready:
    st.info(f"No suspicious patches: the model is not available ({ctx.model_error}).")

# ------------------------------------------------------------------ where a drawing would teach the probes most
st.subheader("Where to draw next")
if st.toggle("Suggest patches to draw on", key="read.suggest", persist_state=state.PERSIST,
             help="Ranks this case's patches by how unsure the concept probes are there, how much the "
                  "validation folds' probes disagree, and strong units with no concept on flagged images."):
    with st.spinner("Ranking this case's patches…"):
        try:
            nxt = rd.draw_next(ctx, st.session_state.get(state.CASE_ID))
        except ConceptLensError as exc:
            nxt = rd.DrawNext([], str(exc))
    if nxt.note:
        st.info(nxt.note)
    for i, row in enumerate(nxt.rows):
        with st.container(horizontal=True, gap="small", key=f"read.suggestion{i}"):
            st.text(f"{row['rank']}. {row['view']} at ({row['x0']}, {row['y0']}) · score {row['score']:.2f}"
                    f" · {row['source']}\n{row['reason']}")
            st.button("Label", key=f"read.suggest.open{i}", on_click=open_patch, args=(nxt.ref(i),),
                      icon=":material/draw:")
