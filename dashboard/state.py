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
