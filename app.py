"""ConceptLens entry point: page config, who is signed in, and the navigation their role gets
(``dashboard.ui.access.navigation``): a page left out of it is never run."""
import streamlit as st

from dashboard.ui import ConceptLensError, access, resources, state
from dashboard.ui.screens import sign_in as si

st.set_page_config(page_title="ConceptLens", page_icon=":material/radiology:", layout="wide")

settings = resources.get_settings()
try:
    store = resources.get_store(settings)
except ConceptLensError as exc:  # StoreLockedError: the database is open in another process
    st.error(str(exc))
    st.stop()

resources.get_warmup(settings)  # the first request starts the background warm-up (once per process)

user, ended = access.current_user(store, st.session_state.get(state.AUTH_TOKEN))
if ended:  # expired, signed out elsewhere or deactivated: forget the token, say why on the sign-in page
    st.session_state.pop(state.AUTH_TOKEN, None)
    st.session_state.pop(state.READER, None)
    st.session_state[state.AUTH_NOTICE] = ended


def sign_out() -> None:
    si.sign_out_user(store, st.session_state.pop(state.AUTH_TOKEN, None))
    st.session_state.pop(state.READER, None)
    st.session_state[state.AUTH_NOTICE] = "You are signed out."


with st.sidebar:
    if user is not None:
        st.caption(f"Signed in as **{user.username}** ({user.role})")
        st.button("Sign out", key="auth.sign_out", on_click=sign_out, icon=":material/logout:")
    elif st.session_state.get(state.READER):
        # the demo's free reader name: typed by anyone, shown as typed, and marked
        st.badge("unauthenticated", icon=":material/warning:", color="orange")
        st.text(f"Reader name: {st.session_state[state.READER]}")

sections = access.navigation(user.role if user else None, settings.require_sign_in)
pages = {title: [st.Page(p.path, title=p.title, icon=p.icon, default=p.default) for p in specs]
         for title, specs in sections.items()}
st.navigation(pages).run()
resources.page_shown(settings)  # the first page is sent: the background warm-up may start
