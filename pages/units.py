"""Units: the unit map coloured by concept; a unit's exemplars, label and drawings; undo a drawing."""
import streamlit as st

from dashboard.ui import ConceptLensError, resources, state
from dashboard.ui.screens import units as un

ctx = resources.get_context()
st.title("Units", help="What each unit of the concept layer has been labelled, from which drawings, and where it fires most.")
resources.warmup_notice(("statistics", "demo drawings"), key="units")

flash = st.session_state.pop(state.UNITS_FLASH, None)
if flash:
    st.success(flash)

unit = st.session_state.get(state.SELECTED_UNIT)
concept = st.session_state.get(state.UNITS_CONCEPT) or None
try:
    view = un.load_units(ctx, unit, concept)
except ConceptLensError as exc:  # ModelUnavailable, EngineNotReady, UnitsError (unknown unit)
    st.error(str(exc))
    st.stop()

st.caption(f"Layer `{view.layer}` of {ctx.card_name}: {view.n_units} units. Click a unit on the map or "
           "type its number.")
for note in view.notes:
    st.info(note)

left, right = st.columns([1.3, 1], gap="large")
with left:
    event = st.plotly_chart(view.figure, key="units.map", on_select="rerun", selection_mode="points",
                            width="stretch")
    points = (event.selection.points if event is not None and hasattr(event, "selection") else []) or []
    picked = next((p.get("customdata") for p in points if p.get("customdata") is not None), None)
    if isinstance(picked, list):
        picked = picked[0] if picked else None
    if picked is not None and int(picked) != unit:
        st.session_state[state.SELECTED_UNIT] = int(picked)
        st.rerun()
with right:
    if view.counts:
        st.dataframe(view.counts, hide_index=True, width="stretch", key="units.counts")
    c1, c2 = st.columns([1, 1])
    typed = c1.number_input("Unit", 0, view.n_units - 1, int(unit or 0), key="units.unit_input")
    if c2.button("Show unit", key="units.show"):
        st.session_state[state.SELECTED_UNIT] = int(typed)
        st.rerun()
    st.selectbox("Labels of concept", [""] + [c["concept"] for c in view.counts], key=state.UNITS_CONCEPT,
                 persist_state=state.PERSIST,
                 format_func=lambda c: c or "all concepts")
    st.dataframe(view.labels, hide_index=True, width="stretch", key="units.labels",
                 column_order=["unit", "concept", "iou", "reader", "image_id"])

d = view.detail
if d is not None:
    st.subheader(f"Unit {d.unit}" + (f" · {d.concept} (IoU {d.iou:.2f})" if d.concept else " · unlabeled"))
    st.caption(f"Threshold {d.threshold:.3f} (activation quantile over the data set), mean {d.mean:.3f}. "
               "Exemplars: the patches where it fires most (heat); blue outline = above threshold.")
    if d.exemplars:
        cols = st.columns(min(4, len(d.exemplars)))
        for i, (rgb, caption) in enumerate(d.exemplars):
            cols[i % len(cols)].image(rgb, caption=caption, width="stretch")
    else:
        st.caption("No exemplar patches are available for this unit.")
    st.markdown("**Drawings behind this unit**")
    if not d.drawings:
        st.caption("No drawing has matched this unit yet.")
    else:
        st.dataframe(d.drawings, hide_index=True, width="stretch", key="units.drawings")
        live = [x for x in d.drawings if x["status"] != "undone"]
        if live:
            c1, c2 = st.columns([3, 1])
            pick = c1.selectbox("Drawing", [x["annotation_id"] for x in live], key="units.undo_pick",
                                format_func=lambda a: next(f"{x['concept']} · {x['reader']} · IoU {x['iou']:.2f} · {a[:8]}"
                                                           for x in live if x["annotation_id"] == a))
            if c2.button("Undo this drawing", key="units.undo"):
                try:
                    changed = un.undo(ctx, pick, st.session_state.get(state.READER, ""))
                except ConceptLensError as exc:  # StoreError: e.g. the drawing was undone meanwhile
                    st.error(str(exc))
                else:
                    now = ", ".join(f"{u}: {c or 'unlabeled'}" for u, c in sorted(changed.items())) or "none"
                    st.session_state[state.UNITS_FLASH] = f"Drawing undone; units it had labeled are now: {now}."
                    st.rerun()
