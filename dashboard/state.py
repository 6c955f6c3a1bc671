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
# would reset these; ``resources.keep_widget_state`` (called by app.py on every run) keeps them.
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
WORKLIST_KINDS = "worklist.kinds"
WORKLIST_TRUTHS = "worklist.truths"
WORKLIST_STATUS = "worklist.status"
WORKLIST_SCORED = "worklist.scored"
WORKLIST_SEARCH = "worklist.search"
WORKLIST_SORT = "worklist.sort"
WORKLIST_DESCENDING = "worklist.descending"

KEPT_WIDGETS = (
    READ_WINDOW_MODE, READ_PRESET, READ_CENTER, READ_WIDTH, READ_OVERLAY, READ_METHOD, READ_OPACITY,
    LABEL_GROUP, LABEL_CONCEPT, LABEL_TOOL, LABEL_RETRAIN, UNITS_CONCEPT, REPORT_CONCEPT,
    WORKLIST_KINDS, WORKLIST_TRUTHS, WORKLIST_STATUS, WORKLIST_SCORED, WORKLIST_SEARCH, WORKLIST_SORT,
    WORKLIST_DESCENDING,
)

#: First values of the kept widgets that do not start at their first option (set once per session).
WIDGET_DEFAULTS = {
    READ_CENTER: 2048.0,
    READ_WIDTH: 4096.0,
    READ_OPACITY: 0.55,
    LABEL_RETRAIN: True,
    WORKLIST_DESCENDING: True,
}
