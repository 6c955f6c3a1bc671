"""Pilot reader studies (multi-reader multi-case, crossover arms with a washout): the library the
study pages call, without Streamlit.

* ``definition``: the study file (TOML) or the same built in code, checked field by field;
* ``design``: counterbalanced arm order (Latin / Williams square) and seeded case order;
* ``protocol``: create (resolving and recording case ids, probe versions, weights), load, edit, close;
* ``accounts``: reader and coordinator accounts, argon2 passwords, expiring sessions, sign-in lockout;
* ``reading``: next case, open, events, drawings, submit, correct, questionnaire, and the one
  blinding decision ``visible_fields``;
* ``results``: progress, reader AUROC per arm with two-way bootstrap CIs, sensitivity/specificity,
  Fleiss' kappa and Krippendorff's alpha, Dice between readers, ratings, plotly figures;
* ``export``: Parquet + CSV + data dictionary, readers pseudonymised;
* ``cli``: ``python -m dashboard.study create|status|results|export|list|user``.

Layer: ``dashboard.ui -> dashboard.study -> dashboard.evaluation`` and below; all SQL is in
``dashboard.data.studies`` / ``dashboard.data.accounts``."""
from dashboard.study.accounts import (
    AuthSession,
    check_session,
    create_user,
    generate_password,
    list_users,
    set_active,
    set_password,
    sign_in,
    sign_out,
)
from dashboard.study.definition import (
    DEFAULT_TRUST,
    SUS_ITEMS,
    Arm,
    Blinding,
    CaseSelection,
    Questionnaire,
    Questions,
    StudyDefinition,
    check_definition,
    definition_from_dict,
    definition_to_toml,
    load_definition,
    parse_definition,
)
from dashboard.study.design import arm_orders, case_order, latin_square, plan_assignments
from dashboard.study.errors import (
    AccountError,
    AccountExistsError,
    AnswerError,
    AuthError,
    LockedOutError,
    NoAssignmentError,
    ReadingError,
    ReadLockedError,
    SessionExpiredError,
    SignInError,
    StudyConflictError,
    StudyDefinitionError,
    StudyError,
    StudyNotFoundError,
    StudyStoreError,
    UnknownUserError,
)
from dashboard.study.export import COLUMNS, ExportSummary, export_study, read_export, study_tables
from dashboard.study.protocol import (
    AuditQuery,
    Study,
    close_study,
    create_study,
    edit_study,
    list_audit,
    list_studies,
    load_study,
    readers_without_account,
    validate_study,
)
from dashboard.study.reading import (
    EVENT_KINDS,
    Assignment,
    NextStep,
    ReadAnswers,
    ReadForm,
    Visibility,
    correct_read,
    next_assignment,
    open_read,
    read_form,
    record_event,
    record_first_drawing,
    save_drawing,
    submit_questionnaire,
    submit_read,
    sus_score,
    visible_fields,
)
from dashboard.study.results import (
    StudyResults,
    birads_agreement,
    compute_progress,
    compute_results,
    dice,
    drawing_dice,
    load_read_table,
    mrmc_auroc,
    reader_auroc,
    results_figures,
    sensitivity_specificity,
)

__all__ = [
    "AuthSession", "check_session", "create_user", "generate_password", "list_users", "set_active", "set_password",
    "sign_in",
    "sign_out",
    "DEFAULT_TRUST", "SUS_ITEMS", "Arm", "Blinding", "CaseSelection", "Questionnaire", "Questions", "StudyDefinition",
    "check_definition", "definition_from_dict", "definition_to_toml", "load_definition", "parse_definition",
    "arm_orders", "case_order", "latin_square", "plan_assignments",
    "AccountError", "AccountExistsError", "AnswerError", "AuthError", "LockedOutError", "NoAssignmentError",
    "ReadingError", "ReadLockedError", "SessionExpiredError", "SignInError", "StudyConflictError",
    "StudyDefinitionError", "StudyError", "StudyNotFoundError", "StudyStoreError", "UnknownUserError",
    "COLUMNS", "ExportSummary", "export_study", "read_export", "study_tables",
    "AuditQuery", "Study", "close_study", "create_study", "edit_study", "list_audit", "list_studies", "load_study", "readers_without_account",
    "validate_study",
    "EVENT_KINDS", "Assignment", "NextStep", "ReadAnswers", "ReadForm", "Visibility", "correct_read",
    "next_assignment", "open_read", "read_form", "record_event", "record_first_drawing", "save_drawing",
    "submit_questionnaire", "submit_read", "sus_score", "visible_fields",
    "StudyResults", "birads_agreement", "compute_progress", "compute_results", "dice", "drawing_dice",
    "load_read_table", "mrmc_auroc", "reader_auroc", "results_figures", "sensitivity_specificity",
]
