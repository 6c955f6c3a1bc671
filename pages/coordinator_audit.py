"""Audit log: every audited action, filtered by study, actor, action, entity and time range."""
import streamlit as st

from dashboard.ui import resources
from dashboard.ui.screens import coordinator_audit as ca
from dashboard.ui.screens import coordinator_results as cres

settings, store, _ = resources.open_study_page("Audit log", "coordinator")

opts = ca.filter_options(store)
c1, c2, c3, c4, c5 = st.columns([1, 1, 1, 1, 2])
any_ = lambda v: "any" if v is None else v  # noqa: E731
study = c1.selectbox("Study", [None] + cres.study_names(store), format_func=any_, key="coord_audit.study")
actor = c2.selectbox("Actor", [None] + opts["actor"], format_func=any_, key="coord_audit.actor")
action = c3.selectbox("Action", [None] + opts["action"], format_func=any_, key="coord_audit.action")
entity = c4.selectbox("Entity", [None] + opts["entity"], format_func=any_, key="coord_audit.entity")
dates = c5.date_input("From – to (UTC)", value=(), key="coord_audit.dates")
since = dates[0] if len(dates) >= 1 else None
until = dates[1] if len(dates) >= 2 else since
rows = ca.audit_rows(store, ca.AuditFilter(study=study, actor=actor, action=action, entity=entity, since=since,
                                           until=until))
st.caption(f"{len(rows)} row(s), newest first" + (f" (at most {ca.MAX_ROWS})" if len(rows) >= ca.MAX_ROWS else ""))
if rows:
    st.dataframe(rows, hide_index=True, width="stretch", key="coord_audit.rows")
else:
    st.info("No audited action matches these filters.")
