"""One module per page, named as the page: worklist, read, label, units, report, model_data.

Each screen function takes an ``AppContext`` (see dashboard.ui.context), returns plain data to
render and never imports streamlit, so pytest calls them directly against a real store in
tmp_path. Screens never import each other: what several share lives in ``dashboard.ui.work``.
"""
