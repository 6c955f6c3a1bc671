"""The app's side of the package: the context every screen function takes (with the shared
``Caches``), session-state keys, the canvas JSON, the shared cached computations (``work``) and
one screen module per page (``screens``). ``resources`` is the one module that imports
streamlit; it is not imported here.

``ConceptLensError`` is re-exported for the pages: the one error type they catch and show."""
from dashboard.errors import ConceptLensError
from dashboard.ui.caches import Caches
from dashboard.ui.context import AppContext, LoadedModel, ModelUnavailable, build_context, load_model
from dashboard.ui.memo import HeadStart, Memo

__all__ = ["AppContext", "Caches", "ConceptLensError", "HeadStart", "LoadedModel", "Memo", "ModelUnavailable",
           "build_context", "load_model"]
