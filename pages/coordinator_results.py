"""Results: progress per reader and arm, the study's statistics and figures, and the export."""
import streamlit as st

from dashboard.ui import ConceptLensError, resources, state
from dashboard.ui.screens import coordinator_results as cres

settings, store, me = resources.open_study_page("Results", "coordinator")

names = cres.study_names(store)
if not names:
    st.info("No study yet: create one on the Studies page.")
    st.stop()
study = st.selectbox("Study", names, key="coord_results.study")

st.subheader("Progress")
progress = cres.progress_rows(store, study)
st.caption(f"{sum(p['submitted'] for p in progress)} of {sum(p['assigned'] for p in progress)} cases submitted; "
           f"{sum(p['opened'] - p['submitted'] for p in progress)} open now.")
st.dataframe(progress, hide_index=True, width="stretch", key="coord_results.progress")

st.subheader("Statistics")
c1, c2 = st.columns([1, 3])
n_boot = c1.number_input("Bootstrap replicates", min_value=100, max_value=20000, value=2000, step=100,
                         key="coord_results.n_boot")
if c2.button("Compute results", key="coord_results.compute", type="primary"):
    try:
        with st.spinner("Computing the study's statistics…"):
            st.session_state[state.COORD_RESULTS] = (study, int(n_boot), cres.results_view(store, study,
                                                                                           n_boot=int(n_boot)))
    except ConceptLensError as exc:
        st.error(str(exc))
kept = st.session_state.get(state.COORD_RESULTS)
if kept and kept[0] == study:
    res = kept[2]
    st.caption(f"{res.n_reads} current reads; {res.n_cases_crossed} cases read by every reader in every arm; "
               f"{kept[1]} bootstrap replicates. Method: {res.method}.")
    for title, rows, key, always in (  # (heading, table, widget key, shown when empty)
            ("**Reader AUROC per arm** (probability of malignancy against truth), mean with 95 % CI", res.auroc,
             "auroc", True),
            ("**Arm difference** in mean AUROC, with 95 % CI", res.differences, "diff", False),
            ("**Sensitivity and specificity** with BI-RADS ≥ 4 called positive", res.sens_spec, "sens_spec", True),
            ("**Agreement on BI-RADS** between readers", res.agreement, "agreement", True),
            ("**Dice** between readers' drawings of one concept on one image", res.dice, "dice", False),
            ("**Ratings**", res.ratings, "ratings", True)):
        if always or rows:
            st.markdown(title)
            st.dataframe(rows, hide_index=True, width="stretch", key=f"coord_results.{key}")
    cols = st.columns(2)
    for i, (name, fig) in enumerate(res.figures.items()):
        cols[i % 2].plotly_chart(fig, width="stretch", key=f"coord_results.fig.{name}")
    with st.expander("Current reads"):
        st.dataframe(res.reads, hide_index=True, width="stretch", key="coord_results.reads")

st.subheader("Export")
st.caption("Every table of the study as Parquet and CSV with a data dictionary and a manifest, in one ZIP. "
           "Readers are pseudonymised (R01, R02, …) unless you ask for usernames. The export is audited.")
c1, c2 = st.columns([1, 2])
real_ids = c1.checkbox("Keep usernames (not pseudonymised)", key="coord_results.real_ids")
if c2.button("Prepare export", key="coord_results.export"):
    try:
        with st.spinner("Exporting…"):
            st.session_state[state.COORD_EXPORT] = (study, *cres.export_zip(store, settings, study, actor=me,
                                                                            real_ids=real_ids))
    except ConceptLensError as exc:  # StudyError: the export folder cannot be written
        st.error(str(exc))
export = st.session_state.get(state.COORD_EXPORT)
if export and export[0] == study:
    st.download_button(f"Download {export[1]}", export[2], file_name=export[1], mime="application/zip",
                       key="coord_results.download", icon=":material/download:")
