"""Readers: the study accounts; create one (initial password shown once), deactivate or reactivate one."""
import streamlit as st

from dashboard.ui import ConceptLensError, resources, state
from dashboard.ui.screens import coordinator_readers as cr

settings, store, me = resources.open_study_page("Readers", "coordinator")

resources.show_flash(state.COORD_FLASH)
shown = st.session_state.pop(state.COORD_PASSWORD, None)
if shown:  # this run only: a reload or the next click no longer shows it
    for username, password in shown:
        st.warning(f"Initial password of {username!r}, shown this once: hand it to them. They can be given a new one "
                   "by the command line (python -m dashboard.study).")
        st.code(password, language=None)

with st.form("coord_readers.create"):
    c1, c2, c3 = st.columns([2, 1, 1])
    username = c1.text_input("Username (lower-case letters, digits, '.', '-', '_')", key="coord_readers.username")
    role = c2.selectbox("Role", cr.ROLES, key="coord_readers.role")
    go = c3.form_submit_button("Create account", type="primary", key="coord_readers.create_button")
if go:
    try:
        name, password = cr.create_account(store, username, role, actor=me)
    except ConceptLensError as exc:  # AccountError, AccountExistsError
        st.error(str(exc))
    else:
        st.session_state[state.COORD_PASSWORD] = [(name, password)]
        st.session_state[state.COORD_FLASH] = f"Created {role} account {name!r}."
        st.rerun()

rows = cr.account_rows(store)
if not rows:
    st.info("No accounts yet.")
    st.stop()
st.dataframe(rows, hide_index=True, width="stretch", key="coord_readers.list")
c1, c2, c3 = st.columns([2, 1, 1])
who = c1.selectbox("Account", [r["username"] for r in rows], key="coord_readers.pick")
active = next(r["active"] for r in rows if r["username"] == who)
if c2.button("Deactivate" if active else "Reactivate", key="coord_readers.toggle"):
    try:
        cr.set_account_active(store, who, not active, actor=me)
    except ConceptLensError as exc:  # AccountError (your own account), UnknownUserError
        st.error(str(exc))
    else:
        st.session_state[state.COORD_FLASH] = f"{who!r} is {'reactivated' if not active else 'deactivated'}."
        st.rerun()
