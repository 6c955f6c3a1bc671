"""ConceptLens entry point: page config and navigation over pages/."""
import streamlit as st

st.set_page_config(page_title="ConceptLens", page_icon=":material/radiology:", layout="wide")

PAGES = [
    st.Page("pages/worklist.py", title="Worklist", icon=":material/list:", default=True),
    st.Page("pages/read.py", title="Read", icon=":material/visibility:"),
    st.Page("pages/label.py", title="Label concepts", icon=":material/draw:"),
    st.Page("pages/units.py", title="Units", icon=":material/scatter_plot:"),
    st.Page("pages/report.py", title="Report", icon=":material/summarize:"),
    st.Page("pages/model_data.py", title="Model and data", icon=":material/settings:"),
]
st.navigation(PAGES).run()
