"""Studies: the pilot studies; create one from a TOML file or a form; redefine, close or reopen one."""
import streamlit as st

from dashboard.ui import ConceptLensError, resources, state
from dashboard.ui.screens import coordinator_studies as cs

settings, store, me = resources.open_study_page("Studies", "coordinator")

resources.show_flash(state.COORD_FLASH)
shown = st.session_state.pop(state.COORD_PASSWORD, None)
if shown:  # passwords of accounts created with a study: this run only
    st.warning("Initial passwords of the new reader accounts. They are shown this once: hand each to its reader.")
    st.dataframe([{"username": u, "password": p} for u, p in shown], hide_index=True, key="coord_studies.passwords")

rows = cs.study_rows(store)
if rows:
    st.dataframe(rows, hide_index=True, width="stretch", key="coord_studies.list")
else:
    st.info("No study yet. Create one below.")


def created(study, passwords=None, warnings=()) -> None:
    st.session_state[state.COORD_FLASH] = (
        f"Created study {study.name!r}: {len(study.readers)} readers × {len(study.case_ids)} cases × "
        f"{len(study.arm_names)} arms; probes {study.probes}." + "".join(f" Warning: {w}" for w in warnings))
    if passwords:
        st.session_state[state.COORD_PASSWORD] = list(passwords.items())
    st.rerun()


create_file, create_form, edit = st.tabs(["Create from a TOML file", "Create with a form", "Edit, close or reopen"])

with create_file:
    st.caption("The study file's format: studies/demo-study.toml (every field explained in "
               "dashboard/study/definition.py).")
    up = st.file_uploader("Study file (.toml)", type=["toml"], key="coord_studies.upload")
    make_accounts = st.checkbox("Create missing reader accounts (random initial passwords, shown once)",
                                key="coord_studies.make_accounts")
    c1, c2 = st.columns([1, 1])
    if up is not None:
        text = up.getvalue().decode("utf-8", errors="replace")
        if c1.button("Check", key="coord_studies.check"):
            try:
                chk = cs.check_toml(store, settings, text, source=up.name)
            except ConceptLensError as exc:  # StudyDefinitionError: every problem, each naming its field
                st.error(str(exc))
            else:
                st.success(f"{up.name} is valid: {len(chk.definition.readers)} readers, "
                           f"{len(chk.definition.arms)} arms.")
                for w in chk.warnings:
                    st.warning(w)
                if chk.missing_accounts:
                    st.info("Readers without an account yet: " + ", ".join(chk.missing_accounts))
        if c2.button("Create study", key="coord_studies.create_file", type="primary"):
            try:
                study, passwords = cs.create_from_toml(store, settings, text, actor=me, create_accounts=make_accounts,
                                                       source=up.name)
            except ConceptLensError as exc:  # StudyDefinitionError, StudyConflictError, AccountError
                st.error(str(exc))
            else:
                created(study, passwords, study.warnings)

with create_form:
    readers = cs.reader_accounts(store)
    sources, splits = cs.case_sources(store)
    with st.form("coord_studies.form"):
        c1, c2 = st.columns(2)
        name = c1.text_input("Name (lower-case letters, digits, - and _)", key="coord_studies.f_name")
        title = c2.text_input("Title", key="coord_studies.f_title")
        chosen = st.multiselect("Readers", readers, key="coord_studies.f_readers",
                                help="Reader accounts; create more on the Readers page.")
        st.markdown("**Cases**: a list of case ids, or a worklist filter")
        ids = st.text_area("Case ids (one per line; leave empty to use the filter)", key="coord_studies.f_ids")
        c1, c2, c3, c4, c5 = st.columns(5)
        source = c1.selectbox("Source", [None] + sources, key="coord_studies.f_source",
                              format_func=lambda v: "any" if v is None else v)
        split = c2.selectbox("Split", [None] + splits, key="coord_studies.f_split",
                             format_func=lambda v: "any" if v is None else v)
        labels = c3.multiselect("Truth labels", list(cs.LABELS), key="coord_studies.f_labels")
        limit = c4.number_input("How many", min_value=1, value=None, step=1, key="coord_studies.f_limit")
        case_seed = c5.number_input("Draw seed", min_value=0, value=0, step=1, key="coord_studies.f_case_seed")
        st.markdown("**Arms**: what each shows; a concept-report arm pins a probe version (a number, or "
                    "\"latest\" resolved now)")
        arms = st.data_editor([vars(a) for a in cs.DEFAULT_ARMS], num_rows="dynamic", hide_index=True,
                              key="coord_studies.f_arms", width="stretch")
        c1, c2 = st.columns(2)
        washout = c1.number_input("Washout between sessions (days)", min_value=0.0, value=28.0, step=1.0,
                                  key="coord_studies.f_washout")
        seed = c2.number_input("Randomisation seed", min_value=0, value=20250101, step=1, key="coord_studies.f_seed")
        c1, c2, c3, c4 = st.columns(4)
        location = c1.checkbox("Ask for a location click", value=True, key="coord_studies.f_location")
        free_text = c2.checkbox("Ask for a comment", value=True, key="coord_studies.f_free_text")
        sus = c3.checkbox("Usability scale (SUS) after each session", value=True, key="coord_studies.f_sus")
        blind = c4.checkbox("Blind truth, pathology, description, other readers' drawings", value=True,
                            key="coord_studies.f_blind")
        trust = st.text_area("Trust statements after each session (one per line; empty: the default ones)",
                             key="coord_studies.f_trust")
        go = st.form_submit_button("Create study", type="primary", key="coord_studies.f_create")
    if go:
        form = cs.StudyForm(name=name, title=title, readers=chosen, case_ids=ids, source=source, split=split,
                            labels=labels, limit=int(limit) if limit else None, case_seed=int(case_seed),
                            arms=cs.arm_rows(arms), washout_days=float(washout), seed=int(seed),
                            blind_truth=blind, blind_pathology=blind, blind_description=blind,
                            blind_other_drawings=blind, location=location, free_text=free_text, sus=sus, trust=trust)
        try:
            study = cs.create_from_form(store, settings, form, actor=me)
        except ConceptLensError as exc:  # StudyDefinitionError lists every problem; StudyConflictError
            st.error(str(exc))
        else:
            created(study, warnings=study.warnings)

with edit:
    names = [r["study"] for r in rows]
    if not names:
        st.info("No study to edit yet.")
    else:
        pick = st.selectbox("Study", names, key="coord_studies.edit_pick")
        if st.button("Load", key="coord_studies.edit_load") or st.session_state.get(state.COORD_EDIT, ("",))[0] != pick:
            loaded = cs.load_for_edit(store, pick)
            st.session_state[state.COORD_EDIT] = (loaded.name, loaded.revision)
            st.session_state["coord_studies.edit_text"] = loaded.text
        name, revision = st.session_state[state.COORD_EDIT]
        info = cs.load_for_edit(store, name)
        st.caption(f"Editing revision {revision} (the store holds revision {info.revision}; status {info.status})."
                   + (" Readers have started: the definition can no longer change." if info.started else ""))
        text = st.text_area("Definition (TOML)", height=420, key="coord_studies.edit_text")
        c1, c2, c3 = st.columns(3)
        if c1.button("Save changes", key="coord_studies.edit_save", type="primary", disabled=info.started):
            try:
                study = cs.save_edit(store, settings, name, text, expected_revision=revision, actor=me)
            except ConceptLensError as exc:  # StudyConflictError: someone saved first; StudyDefinitionError
                st.error(str(exc))
            else:
                st.session_state.pop(state.COORD_EDIT, None)
                st.session_state[state.COORD_FLASH] = f"Saved study {study.name!r} (revision {study.revision})."
                st.rerun()
        closing = info.status == "open"
        if c2.button("Close study" if closing else "Reopen study", key="coord_studies.edit_status"):
            try:
                study = cs.set_status(store, name, close=closing, expected_revision=revision, actor=me)
            except ConceptLensError as exc:  # StudyConflictError
                st.error(str(exc))
            else:
                st.session_state.pop(state.COORD_EDIT, None)
                st.session_state[state.COORD_FLASH] = f"Study {study.name!r} is {study.status} now."
                st.rerun()
