"""Session-state keys, in one place so pages never spell them twice."""

READER = "reader.name"
CASE_ID = "case.id"
IMAGE_ID = "image.id"
PATCH = "patch.ref"          # (image_id, x0, y0, size) in model pixels
CANVAS_NONCE = "label.canvas_nonce"
LAST_MATCH = "label.last_match"
SELECTED_UNIT = "units.selected"
PROBE_VERSION = "report.probe_version"
MODEL_CARD = "model.card"
WINDOW = "read.window"       # (center, width, function) or a preset name, per session

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

KEPT_WIDGETS = (
    READ_WINDOW_MODE, READ_PRESET, READ_CENTER, READ_WIDTH, READ_OVERLAY, READ_METHOD, READ_OPACITY,
    LABEL_GROUP, LABEL_CONCEPT, LABEL_TOOL, LABEL_RETRAIN, UNITS_CONCEPT, REPORT_CONCEPT, REPORT_MAPS,
    WORKLIST_KINDS, WORKLIST_TRUTHS, WORKLIST_STATUS, WORKLIST_SCORED, WORKLIST_SEARCH, WORKLIST_SORT,
    WORKLIST_DESCENDING,
)
