"""The last import's report, kept beside the database for the Model and data page.

Importers (``dashboard.data.importers``: mini-MIAS, CBIS-DDSM, generic folders), folder ingest and
uploads each produce a report; ``save_last_import`` turns either kind into one plain record (what was
imported, what failed and why, and which image fields were inferred rather than read from the file)
and writes it as JSON in the store's data folder (``last-import.json``), replacing the previous one.
A JSON file, not a table: it is one overwritten record with no relations, and no database write may
be needed to look at it. File names in it are the names the report already shows (relative to the
imported folder, or as uploaded); inferred values name the token they came from, never the path.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path

LAST_IMPORT_FILE = "last-import.json"
#: image meta keys that say a field was inferred, and the keys that say from where
INFERRED_FIELDS = (("laterality", "laterality_inferred", "laterality_source"),
                   ("view", "view_inferred", "view_source"),
                   ("pixel_spacing_mm", "spacing_default", "spacing_source"))


def last_import_path(store) -> Path:
    """Where the last import's record lives: the store's data folder."""
    return Path(store.data_dir) / LAST_IMPORT_FILE


def inferred_fields(store, results: list[dict]) -> list[dict]:
    """One row per inferred field of the added images: file, image id, field, value, source."""
    out = []
    for r in results:
        if r.get("result") != "added" or not r.get("image_id"):
            continue
        row = store.get_image(r["image_id"])
        meta = row.get("meta") or {}
        if isinstance(meta, str):
            meta = json.loads(meta or "{}")
        for name, flag, source in INFERRED_FIELDS:
            if meta.get(flag) or (name == "pixel_spacing_mm" and meta.get(source)):
                out.append({"file": r.get("file", ""), "image_id": r["image_id"], "field": name,
                            "value": str(row.get(name) or ""), "source": str(meta.get(source) or "inferred")})
    return out


def import_record(store, report, *, kind: str, source: str = "") -> dict:
    """A plain record of an ImportReport or IngestReport: counts, per-file results, failures with their
    reasons and the inferred fields of the added images."""
    results = [dict(file=str(r.get("file", "")), result=str(r.get("result", "")), detail=str(r.get("detail", "")),
                    image_id=str(r.get("image_id", "")), case=str(r.get("case", ""))) for r in report.results]
    return {
        "kind": kind,
        "source": str(source or getattr(report, "source", "") or ""),
        "finished_at": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "added": int(report.added), "duplicates": int(report.duplicates),
        "failed": [{"file": str(f), "reason": str(why)} for f, why in report.failed],
        "inferred": inferred_fields(store, results),
        "results": results,
    }


def save_last_import(store, report, *, kind: str, source: str = "") -> Path:
    """Write the report's record over the previous one (atomically: a temporary file, then a rename)."""
    path = last_import_path(store)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(import_record(store, report, kind=kind, source=source), indent=1))
    os.replace(tmp, path)
    return path


def load_last_import(store) -> dict | None:
    """The last import's record, or None when nothing was imported yet (or the file is unreadable)."""
    path = last_import_path(store)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
