"""Questionnaire: the end-of-session usability (SUS) and trust questions, then the washout message."""
import streamlit as st

from dashboard.ui import ConceptLensError, resources, state
from dashboard.ui.screens import study_questionnaire as sq
from dashboard.ui.screens import study_read as sr
from dashboard.ui.screens import study_session as ss

settings, store, reader = resources.open_study_page("End-of-session questionnaire", "reader")

choice = ss.pick_study(ss.reader_studies(store, reader), st.session_state.get(state.STUDY_NAME))
if choice is None:
    st.info("You have no study to answer for yet.")
    st.stop()
done = resources.show_flash(state.QUESTIONNAIRE_FLASH)
try:
    view = sq.questionnaire_view(store, ss.next_step(store, choice.name, reader))
except ConceptLensError as exc:  # NoAssignmentError
    st.error(str(exc))
    st.stop()
st.caption(f"{choice.label} · {ss.progress_text(view.step)}")

if not view.due:
    if not done:
        st.info(sq.not_due_text(view.step))
    if view.step.state == "read":
        st.page_link("pages/study_read.py", label="Go to Reading", icon=":material/radiology:")
    st.stop()

st.write(view.step.message)
key = f"study_q.{view.step.study}.{view.step.session_index}"
with st.form(key):
    sus = []
    if view.sus_items:
        st.subheader("Usability")
        for i, item in enumerate(view.sus_items):
            sus.append(st.radio(f"{i + 1}. {item}", list(sr.LIKERT), format_func=sr.LIKERT.get, index=None,
                                horizontal=True, key=f"{key}.sus{i}"))
    trust = {}
    if view.trust_items:
        st.subheader("Trust")
        for i, item in enumerate(view.trust_items):
            trust[item] = st.radio(item, list(sr.LIKERT), format_func=sr.LIKERT.get, index=None, horizontal=True,
                                   key=f"{key}.trust{i}")
    comment = st.text_area("Anything else you want to tell us (optional)", key=f"{key}.comment")
    submitted = st.form_submit_button("Submit questionnaire", type="primary", key=f"{key}.submit")
if submitted:
    try:
        after = sq.submit(store, view, reader, sus=sus, trust={k: v for k, v in trust.items() if v is not None},
                          comment=comment)
    except ConceptLensError as exc:  # AnswerError lists the unanswered items
        st.error(str(exc))
    else:
        st.session_state[state.QUESTIONNAIRE_FLASH] = sq.next_text(after)
        st.rerun()
