"""Session-state keys, in one place so pages never spell them twice."""

# ---------------------------------------------------------------- what the reader is working on
READER = "reader.name"
CASE_ID = "case.id"
IMAGE_ID = "image.id"
PATCH = "patch.ref"          # (image_id, x0, y0, size) in model pixels
MODEL_CARD = "model.card"
SELECTED_UNIT = "units.selected"

# ---------------------------------------------------------------- what a page keeps between its runs
READ_WINDOW_SHOWN = "read.window_shown"   # (centre, width) of the window the last run showed
READ_CASE = "read.case"                   # the case picker (a widget key the page also writes)
READ_OPEN = "read.open_patch_ref"         # a patch a click asked to label: the next run opens the Label page
READ_SEEN_CLICK = "read.seen_click"      # unix time of the last image click taken, so it is never taken again
READ_POINT_ERROR = "read.point_error"     # why a click could not open a patch there, shown once
READ_CARD_CASE = "read.card_case"         # the case whose model card was picked for its domain (once per case)
READ_CARD = "read.card"                   # the Read page's "Model for this case" picker
LABEL_SAVES = "label.saves"               # {patch: SaveRecord}: what Save stored from each canvas (callbacks fill it)
LABEL_SIGN_IN_ERROR = "label.sign_in_error"  # why the reader name was refused, shown once
LABEL_FLASH = "label.flash"               # (message, lexicon group) after a concept was added
LABEL_ADD_ERROR = "label.add_error"       # why a custom concept was refused, shown once
REPORT_ACTION = "report.action"           # "retrain" | "tcav" | "curve": a button's job, run by the next run
REPORT_FLASH = "report.flash"             # a message for the next run
REPORT_IMAGE = "report.image"             # the image picker (a widget key the page also writes)
REPORT_CURVE = "report.curve_view"        # the learning curve computed on request
REPORT_VERSION = "report.version"         # the probe version the Report shows (None: the latest)
REPORT_COMPARE = "report.compare"         # the probe version it is compared with (None: none)
WHATIF_OPEN = "report.whatif"            # the What if expander (open: its panel computes)
WHATIF_CONCEPT = "report.whatif.concept"  # the concept the What if panel removes
WHATIF_STRENGTH = "report.whatif.strength"  # how much of it, percent
WHATIF_LESION_MAP = "report.whatif.lesion_map"  # also show the lesion map before/after
UNITS_FLASH = "units.flash"               # a message for the next run
WORKLIST_SCORE_CLICKED = "worklist.score_clicked"  # Score was pressed: score in this run
WORKLIST_CASE = "worklist.case"           # the case picker (a widget key the page also writes)

# ---------------------------------------------------------------- sign-in and the pilot study
AUTH_TOKEN = "auth.token"                 # the signed-in session's secret (dashboard.study.accounts); never shown
AUTH_NOTICE = "auth.notice"               # why the last sign-in ended (expired, signed out), shown once
STUDY_NAME = "study.name"                 # the study a reader is reading (when assigned to several)
STUDY_CLICK = "study_read.click"          # (read_id, image_id, x, y): the reader's location click, model px
STUDY_SEEN_CLICK = "study_read.seen_click"  # unix time of the last click taken, so an old one is not re-taken
STUDY_PRESETS = "study_read.presets"     # names of the shown case's file windows
STUDY_FLASH = "study_read.flash"          # what the last submit or correction did, shown once
STUDY_DRAW_NONCE = "study_read.draw_nonce"  # a new value gives a fresh drawing canvas
QUESTIONNAIRE_FLASH = "study_q.flash"     # the questionnaire was stored: what comes next
COORD_PASSWORD = "coordinator.new_password"  # (username, password) of an account just created: shown once
COORD_EDIT = "coordinator.edit"           # (study, revision) the coordinator loaded into the editor
COORD_FLASH = "coordinator.flash"         # a message for the next run of a coordinator page
COORD_RESULTS = "coordinator.results"     # (study, n_boot, StudyResults) computed on request
COORD_EXPORT = "coordinator.export"       # (file name, ZIP bytes) of the last export

# ---------------------------------------------------------------- widget keys kept across pages
# Streamlit forgets the value of a widget that a run did not draw, so a visit to another page
# would reset these: their widgets are created with ``persist_state=PERSIST`` (kept for the session).
PERSIST = "session"
READ_WINDOW_MODE = "read.window_mode"
READ_PRESET = "read.preset"
READ_CENTER = "read.center"
READ_WIDTH = "read.width"
READ_OVERLAY = "read.overlay"
READ_METHOD = "read.method"
READ_OPACITY = "read.opacity"
LABEL_GROUP = "label.group"
LABEL_CONCEPT = "label.concept"
LABEL_TOOL = "label.tool"
LABEL_RETRAIN = "label.retrain_on_save"
UNITS_CONCEPT = "units.concept"
REPORT_CONCEPT = "report.concept"
REPORT_MAPS = "report.map_figures"
WORKLIST_KINDS = "worklist.kinds"
WORKLIST_TRUTHS = "worklist.truths"
WORKLIST_STATUS = "worklist.status"
WORKLIST_SCORED = "worklist.scored"
WORKLIST_SEARCH = "worklist.search"
WORKLIST_SORT = "worklist.sort"
WORKLIST_DESCENDING = "worklist.descending"
DATASET_RUN = "dataset.run"  # the batch report the Concepts across images page shows

KEPT_WIDGETS = (
    READ_WINDOW_MODE, READ_PRESET, READ_CENTER, READ_WIDTH, READ_OVERLAY, READ_METHOD, READ_OPACITY,
    LABEL_GROUP, LABEL_CONCEPT, LABEL_TOOL, LABEL_RETRAIN, UNITS_CONCEPT, REPORT_CONCEPT, REPORT_MAPS,
    WORKLIST_KINDS, WORKLIST_TRUTHS, WORKLIST_STATUS, WORKLIST_SCORED, WORKLIST_SEARCH, WORKLIST_SORT,
    WORKLIST_DESCENDING, DATASET_RUN,
)
