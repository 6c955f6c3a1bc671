"""One call writes a whole study to a folder, every table as Parquet and CSV, with a data dictionary.

    export_study(store, "demo-study", out_dir, actor="coordinator")   # -> ExportSummary

Tables (``COLUMNS`` below is the data dictionary: type, unit and meaning of every column):
definition, cases, assignments, reads, timings, events, questionnaires, questionnaire_items,
drawings, audit; plus ``data_dictionary.{parquet,csv}`` and ``manifest.json``.

Readers are pseudonymised, stable per study: R01, R02, ... in the order the definition lists them
(in names, assignment ids, audit actors and payloads, and the exported definition text);
``real_ids=True`` keeps usernames. Time stamps are UTC. ``read_export`` reads a folder back into
the same frames. The export is audited (``export``/``study``).
"""
from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import pandas as pd

from dashboard.study.definition import SUS_ITEMS, definition_to_toml
from dashboard.study.errors import StudyError, utcnow
from dashboard.study.protocol import Study, load_study

S, I, F, T, B, J = "string", "int64", "float64", "timestamp (UTC)", "bool", "json text"

#: table -> [(column, type, unit, meaning)]: the data dictionary, and the column order written.
COLUMNS: dict[str, list[tuple[str, str, str, str]]] = {
    "definition": [
        ("study", S, "", "study name"),
        ("title", S, "", "study title"),
        ("status", S, "", "open | closed at export time"),
        ("revision", I, "", "definition revision (1 = as created)"),
        ("seed", I, "", "randomisation seed of arm and case order"),
        ("definition_sha256", S, "", "SHA-256 of the stored definition text (with real usernames)"),
        ("definition_toml", S, "", "the definition (TOML); readers pseudonymised unless real ids were asked"),
        ("model_card", S, "", "model card whose score and explanations were shown"),
        ("weights_sha256", S, "", "SHA-256 of that card's weights at study creation"),
        ("probes", J, "", "arm -> pinned concept-probe version (null: no concept report)"),
        ("washout_days", F, "days", "minimum time between a reader's sessions"),
        ("created_by", S, "", "who created the study"),
        ("created_at", T, "", "when the study was created"),
        ("exported_at", T, "", "when this export was written"),
    ],
    "cases": [
        ("case_id", S, "", "case identifier in the store"),
        ("source", S, "", "data set the case comes from"),
        ("split", S, "", "train | val | test | none"),
        ("label", S, "", "truth: normal | benign | malignant | unknown"),
        ("positive", F, "", "1 malignant, 0 normal or benign, empty unknown (the AUROC's truth)"),
    ],
    "assignments": [
        ("assignment_id", S, "", "study/reader/session/position"),
        ("reader", S, "", "reader (pseudonym unless real ids)"),
        ("arm", S, "", "arm name"),
        ("session_index", I, "", "0-based session of this reader (one per arm)"),
        ("position", I, "", "0-based reading order inside the session"),
        ("case_id", S, "", "case read"),
    ],
    "reads": [
        ("read_id", S, "", "read identifier"),
        ("assignment_id", S, "", "the assignment read"),
        ("reader", S, "", "reader (pseudonym unless real ids)"),
        ("arm", S, "", "arm name"),
        ("session_index", I, "", "0-based session"),
        ("position", I, "", "0-based reading order inside the session"),
        ("case_id", S, "", "case read"),
        ("opened_at", T, "", "server time of the case's first render (original read's for a correction)"),
        ("first_drawing_at", T, "", "server time of the first drawing, empty if none"),
        ("submitted_at", T, "", "server time the answers were submitted (the correction's time for one)"),
        ("birads", I, "category", "BI-RADS assessment 0-6"),
        ("malignancy", F, "%", "probability of malignancy 0-100"),
        ("click_image_id", S, "", "image of the most suspicious location, empty if not given"),
        ("click_x", F, "model-space px", "x of the most suspicious location"),
        ("click_y", F, "model-space px", "y of the most suspicious location"),
        ("confidence", I, "Likert 1-5", "reader's confidence"),
        ("helpfulness", I, "Likert 1-5", "'the explanation helped me' (only in arms that show one)"),
        ("comment", S, "", "free text"),
        ("supersedes", S, "", "read_id this correction replaces, empty for an original read"),
        ("superseded_by", S, "", "read_id of the correction replacing this read, empty if none"),
        ("is_current", B, "", "true for the read whose answers count (not superseded, submitted)"),
        ("correction_reason", S, "", "why the read was corrected"),
        ("corrected_by", S, "", "who made the correction"),
    ],
    "timings": [
        ("read_id", S, "", "original read (not corrections)"),
        ("reader", S, "", "reader (pseudonym unless real ids)"),
        ("arm", S, "", "arm name"),
        ("case_id", S, "", "case read"),
        ("seconds_to_first_drawing", F, "s", "first render to first drawing, empty if no drawing"),
        ("seconds_to_submit", F, "s", "first render to submit, empty if not submitted"),
    ],
    "events": [
        ("event_id", I, "", "event identifier (increasing)"),
        ("read_id", S, "", "read the event happened in"),
        ("reader", S, "", "reader (pseudonym unless real ids)"),
        ("kind", S, "", "window_level | overlay_toggle | zoom | pan | image_switch"),
        ("payload", J, "", "event details as the viewer sent them"),
        ("recorded_at", T, "", "server time of the event"),
    ],
    "questionnaires": [
        ("reader", S, "", "reader (pseudonym unless real ids)"),
        ("session_index", I, "", "0-based session the questionnaire closed"),
        ("arm", S, "", "arm of that session"),
        ("sus_score", F, "SUS 0-100", "System Usability Scale score (standard scoring), empty if not asked"),
        ("comment", S, "", "free text"),
        ("submitted_at", T, "", "server time of submission"),
    ],
    "questionnaire_items": [
        ("reader", S, "", "reader (pseudonym unless real ids)"),
        ("session_index", I, "", "0-based session"),
        ("arm", S, "", "arm of that session"),
        ("instrument", S, "", "sus | trust"),
        ("item", I, "", "1-based item number within the instrument"),
        ("text", S, "", "item wording"),
        ("response", I, "Likert 1-5", "answer"),
    ],
    "drawings": [
        ("annotation_id", S, "", "drawing identifier"),
        ("image_id", S, "", "image drawn on"),
        ("concept", S, "", "concept drawn"),
        ("reader", S, "", "reader (pseudonym unless real ids)"),
        ("arm", S, "", "arm the drawing was made in"),
        ("patch_x0", I, "model-space px", "left edge of the drawing's patch in the image"),
        ("patch_y0", I, "model-space px", "top edge of the drawing's patch in the image"),
        ("patch_size", I, "model-space px", "side of the square patch"),
        ("shape", S, "", "polygon | freehand | rect"),
        ("geometry", J, "patch px", "the drawn points, in patch pixels"),
        ("mask_png_base64", S, "", "patch-sized 1-bit PNG mask, base64"),
        ("model_card", S, "", "model card the drawing was made under"),
        ("created_at", T, "", "when the drawing was saved"),
        ("deleted_at", T, "", "when it was deleted, empty if live"),
    ],
    "audit": [
        ("seq", I, "", "audit sequence number"),
        ("logged_at", T, "", "time of the action (server clock)"),
        ("actor", S, "", "who (readers pseudonymised unless real ids)"),
        ("action", S, "", "create | edit | close | open | first_drawing | submit | correct | questionnaire | export"),
        ("entity", S, "", "what kind of thing: study | read"),
        ("entity_id", S, "", "which one"),
        ("payload", J, "", "details of the action"),
    ],
}
_PANDAS = {S: "object", I: "Int64", F: "float64", T: "datetime64[us]", B: "bool", J: "object"}


@dataclass(frozen=True)
class ExportSummary:
    out_dir: Path
    rows: dict          # table -> row count
    files: list         # paths written
    real_ids: bool


class _Ids:
    """Reader pseudonyms R01.. in definition order (identity with real ids)."""

    def __init__(self, readers, real: bool):
        self.real = real
        self.map = {r: f"R{i + 1:02d}" for i, r in enumerate(readers)}

    def name(self, x):
        return x if self.real or x is None else self.map.get(x, x)

    def assignment(self, aid):
        if self.real or not aid:
            return aid
        parts = aid.split("/")
        if len(parts) == 4:
            parts[1] = self.name(parts[1])
        return "/".join(parts)

    def payload(self, v):
        if isinstance(v, dict):
            return {k: (self.assignment(x) if k == "assignment_id" else self.name(x) if k == "reader"
                        else self.payload(x)) for k, x in v.items()}
        if isinstance(v, list):
            return [self.payload(x) for x in v]
        return v


def _frame(table: str, rows: list[dict]) -> pd.DataFrame:
    cols = COLUMNS[table]
    df = pd.DataFrame(rows, columns=[c[0] for c in cols])
    for name, kind, _, _ in cols:
        df[name] = df[name].astype(_PANDAS[kind])
    return df


def _seconds(a, b):
    return (b - a).total_seconds() if a is not None and b is not None else math.nan


def study_tables(store, study: str | Study, *, real_ids: bool = False, now: datetime | None = None
                 ) -> dict[str, pd.DataFrame]:
    """Every export table of a study as a typed frame (what ``export_study`` writes)."""
    st = study if isinstance(study, Study) else load_study(store, study)
    ids = _Ids(st.readers, real_ids)
    defn = st.definition if real_ids else replace(st.definition, readers=tuple(ids.name(r) for r in st.readers))
    t: dict[str, list[dict]] = {k: [] for k in COLUMNS}
    t["definition"].append({
        "study": st.name, "title": st.definition.title, "status": st.status, "revision": st.revision,
        "seed": st.seed, "definition_sha256": st.definition_sha256,
        "definition_toml": st.definition_toml if real_ids else definition_to_toml(defn),
        "model_card": st.model_card, "weights_sha256": st.weights_sha256, "probes": json.dumps(st.probes),
        "washout_days": float(st.definition.washout_days), "created_by": ids.name(st.created_by),
        "created_at": st.created_at, "exported_at": now or utcnow()})
    for c in store.list_case_truth(list(st.case_ids)):
        lab = c["label"]
        t["cases"].append({**c, "positive": 1.0 if lab == "malignant" else 0.0 if lab in ("normal", "benign")
                           else math.nan})
    for a in store.list_assignments(st.name):
        t["assignments"].append({"assignment_id": ids.assignment(a["assignment_id"]), "reader": ids.name(a["reader"]),
                                 "arm": a["arm"], "session_index": a["session_index"], "position": a["position"],
                                 "case_id": a["case_id"]})
    for r in store.list_reads(st.name):
        t["reads"].append({
            **{k: r[k] for k in ("read_id", "arm", "session_index", "position", "case_id", "opened_at",
                                 "first_drawing_at", "submitted_at", "birads", "malignancy", "click_image_id",
                                 "click_x", "click_y", "confidence", "helpfulness", "comment", "supersedes",
                                 "superseded_by", "correction_reason")},
            "assignment_id": ids.assignment(r["assignment_id"]), "reader": ids.name(r["reader"]),
            "is_current": r["submitted_at"] is not None and r["superseded_by"] is None,
            "corrected_by": ids.name(r["corrected_by"])})
        if r["supersedes"] is None:
            t["timings"].append({"read_id": r["read_id"], "reader": ids.name(r["reader"]), "arm": r["arm"],
                                 "case_id": r["case_id"],
                                 "seconds_to_first_drawing": _seconds(r["opened_at"], r["first_drawing_at"]),
                                 "seconds_to_submit": _seconds(r["opened_at"], r["submitted_at"])})
    for e in store.list_read_events(st.name):
        t["events"].append({"event_id": e["event_id"], "read_id": e["read_id"], "reader": ids.name(e["reader"]),
                            "kind": e["kind"], "payload": json.dumps(e["payload"]), "recorded_at": e["recorded_at"]})
    q = st.definition.questionnaire
    for row in store.list_questionnaires(st.name):
        who = ids.name(row["reader"])
        t["questionnaires"].append({"reader": who, "session_index": row["session_index"], "arm": row["arm"],
                                    "sus_score": row["sus_score"], "comment": row["comment"],
                                    "submitted_at": row["submitted_at"]})
        base = {"reader": who, "session_index": row["session_index"], "arm": row["arm"]}
        for (i, text), v in zip(enumerate(SUS_ITEMS, 1), row["sus_items"] or []):
            t["questionnaire_items"].append({**base, "instrument": "sus", "item": i, "text": text, "response": v})
        for i, text in enumerate(q.trust, 1):
            if text in row["trust_items"]:
                t["questionnaire_items"].append({**base, "instrument": "trust", "item": i, "text": text,
                                                 "response": row["trust_items"][text]})
    for d in store.list_study_annotations(st.name, include_deleted=True):
        t["drawings"].append({**{k: d[k] for k in ("annotation_id", "image_id", "concept", "arm", "patch_x0",
                                                   "patch_y0", "patch_size", "shape", "model_card", "created_at",
                                                   "deleted_at")},
                              "reader": ids.name(d["reader"]), "geometry": json.dumps(d["geometry"]),
                              "mask_png_base64": base64.b64encode(d["mask_png"]).decode("ascii")})
    for a in reversed(store.query_audit(study=st.name, limit=10_000_000)):
        t["audit"].append({"seq": a["seq"], "logged_at": a["logged_at"], "actor": ids.name(a["actor"]),
                           "action": a["action"], "entity": a["entity"],
                           "entity_id": ids.assignment(a["entity_id"]),
                           "payload": json.dumps(ids.payload(a["payload"]), default=str)})
    return {k: _frame(k, rows) for k, rows in t.items()}


def dictionary_frame() -> pd.DataFrame:
    return pd.DataFrame([{"table": t, "column": c, "type": k, "unit": u, "meaning": m}
                         for t, cols in COLUMNS.items() for c, k, u, m in cols])


def export_study(store, study: str | Study, out_dir: str | Path, *, actor: str, real_ids: bool = False,
                 now: datetime | None = None) -> ExportSummary:
    """Write every table of the study as ``<table>.parquet`` and ``<table>.csv`` into ``out_dir``,
    with ``data_dictionary.{parquet,csv}`` and ``manifest.json``; audited as ``export``."""
    st = study if isinstance(study, Study) else load_study(store, study)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StudyError(f"Cannot create the export folder {out}: {exc}") from None
    now = now or utcnow()
    tables = study_tables(store, st, real_ids=real_ids, now=now)
    tables["data_dictionary"] = dictionary_frame()
    files = []
    try:
        for name, df in tables.items():
            df.to_parquet(out / f"{name}.parquet", index=False)
            df.to_csv(out / f"{name}.csv", index=False, date_format="%Y-%m-%dT%H:%M:%S.%f")
            files += [out / f"{name}.parquet", out / f"{name}.csv"]
        rows = {k: int(len(v)) for k, v in tables.items()}
        manifest = {"study": st.name, "exported_at": now.isoformat(), "real_ids": real_ids, "rows": rows,
                    "definition_sha256": st.definition_sha256, "format": "one Parquet and one CSV file per table; "
                    "column meanings in data_dictionary; times UTC"}
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
        files.append(out / "manifest.json")
    except OSError as exc:
        raise StudyError(f"Cannot write the export into {out}: {exc}") from None
    store.write_audit(actor, "export", "study", st.name,
                      {"study": st.name, "out_dir": str(out), "real_ids": real_ids, "rows": rows})
    return ExportSummary(out_dir=out, rows=rows, files=[str(f) for f in files], real_ids=real_ids)


def read_export(out_dir: str | Path, fmt: str = "parquet") -> dict[str, pd.DataFrame]:
    """Read an export folder back into typed frames (``fmt`` "parquet" or "csv")."""
    out = Path(out_dir)
    frames = {}
    for table, cols in COLUMNS.items():
        path = out / f"{table}.{fmt}"
        if fmt == "parquet":
            df = pd.read_parquet(path)
        else:
            times = [c for c, k, _, _ in cols if k == T]
            df = pd.read_csv(path, dtype={c: "object" for c, k, _, _ in cols if k in (S, J)}, parse_dates=times)
            for c, k, _, _ in cols:
                if k == B:
                    df[c] = df[c].astype(bool)
        for c, k, _, _ in cols:
            df[c] = df[c].astype(_PANDAS[k])
        frames[table] = df[[c for c, _, _, _ in cols]]
    return frames
