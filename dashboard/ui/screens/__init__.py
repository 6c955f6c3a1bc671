"""One module per page: functions a page calls once, returning plain data to render.

Each takes an ``AppContext`` (see dashboard.ui.context) and never imports streamlit, so pytest
calls them directly against a real store in tmp_path.
"""
