"""The last import's report, kept beside the database for the Model and data page.

Importers (``dashboard.data.importers``: mini-MIAS, CBIS-DDSM, generic folders), folder ingest and
uploads each produce a report; ``save_last_import`` turns either kind into one plain record (what was
imported, what failed and why, and which image fields were inferred rather than read from the file)
and writes it as JSON in the store's data folder (``last-import.json``), replacing the previous one.
A JSON file, not a table: it is one overwritten record with no relations, and no database write may
be needed to look at it. It is data at rest, so it holds no file or folder name (they often name the
patient): a file is "file N (.ext)" in the order of the report, any name inside a reason is replaced by
that label, and an inferred value names the token it came from, never the path. The command line and the
page show the real names at the time of the import, from the report itself.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import re
from pathlib import Path, PurePath

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


def _labels(report) -> dict[str, str]:
    """Each file name of the report -> "file N (.ext)", in the report's order (results, then failures)."""
    names = [str(r.get("file", "")) for r in report.results] + [str(f) for f, _ in report.failed]
    out: dict[str, str] = {}
    for name in names:
        if name and name not in out:
            out[name] = f"file {len(out) + 1} ({PurePath(name).suffix.lower() or 'no extension'})"
    return out


def _scrub(text: str, labels: dict[str, str]) -> str:
    """``text`` with every file name of the report (whole, its base name, its stem and its folders)
    replaced by the file's label."""
    parts: dict[str, str] = {}
    for name, label in labels.items():
        p = PurePath(name)
        for piece in (name, str(p), p.name, p.stem, *p.parent.parts):
            if piece and piece not in (".", "/", "..") and len(piece) > 2:
                parts.setdefault(piece, label)
    for piece in sorted(parts, key=len, reverse=True):
        # a whole name only: a folder "mias" leaves the word "mini-mias" alone
        text = re.sub(r"(?<![\w.-])" + re.escape(piece) + r"(?![\w-])", parts[piece], text)
    return text


def import_record(store, report, *, kind: str, source: str = "") -> dict:
    """A plain record of an ImportReport or IngestReport, with no file or folder names: counts, per-file
    results, failures with their reasons and the inferred fields of the added images."""
    labels = _labels(report)
    results = [dict(file=labels.get(str(r.get("file", "")), ""), result=str(r.get("result", "")),
                    detail=_scrub(str(r.get("detail", "")), labels), image_id=str(r.get("image_id", "")),
                    case=str(r.get("case", ""))) for r in report.results]
    source = str(source or getattr(report, "source", "") or "")
    return {
        "kind": kind,
        "source": _scrub(source, labels) if os.sep not in source else "a folder",
        "finished_at": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "added": int(report.added), "duplicates": int(report.duplicates),
        "failed": [{"file": labels.get(str(f), ""), "reason": _scrub(str(why), labels)} for f, why in report.failed],
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
