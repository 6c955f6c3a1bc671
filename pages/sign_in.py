"""Sign in: username and password of a pilot-study account (readers and coordinators)."""
import streamlit as st

from dashboard.ui import ConceptLensError, resources, state
from dashboard.ui.screens import sign_in as si

settings = resources.get_settings()
store = resources.get_store(settings)
view = si.sign_in_view(settings)
st.title(view.title)
st.write(view.intro)
notice = st.session_state.pop(state.AUTH_NOTICE, None)
if notice:
    st.info(notice)

with st.form("sign_in.form", enter_to_submit=True, clear_on_submit=True):  # the password is not kept
    username = st.text_input("Username", key="sign_in.username", autocomplete="username")
    password = st.text_input("Password", type="password", key="sign_in.password", autocomplete="current-password")
    submitted = st.form_submit_button("Sign in", type="primary", key="sign_in.submit")

if submitted:
    try:
        auth = si.sign_in_user(store, settings, username, password, client=st.context.ip_address)
    except ConceptLensError as exc:  # SignInError, LockedOutError: the library's message
        st.error(str(exc))
    else:
        st.session_state[state.AUTH_TOKEN] = auth.token
        if auth.role == "coordinator":  # drawings on the demo pages then carry the signed-in name
            st.session_state[state.READER] = auth.username
        else:
            st.session_state.pop(state.READER, None)
        st.rerun()  # the navigation of the role: a reader lands on Reading, a coordinator on Studies
st.caption(f"A sign-in lasts {view.session_hours:g} hours. A page reload asks you to sign in again.")
