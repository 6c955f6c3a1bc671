"""The app's side of the package: the context every screen function takes, session-state keys,
caches, the canvas JSON, and one screen module per page (``screens``). ``resources`` is the one
module that imports streamlit; it is not imported here."""
from dashboard.ui.context import AppContext, LoadedModel, ModelUnavailable, build_context, load_model
from dashboard.ui.memo import HeadStart, Memo

__all__ = ["AppContext", "LoadedModel", "ModelUnavailable", "build_context", "load_model", "HeadStart", "Memo"]
