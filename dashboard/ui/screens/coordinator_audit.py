"""Audit log (a coordinator's page): every audited action (sign-ins, study creation and edits, opens,
submits, corrections, questionnaires, exports, drawings, account changes), newest first, filtered
by study, actor, action, entity and a time range."""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from dashboard.study import AuditQuery, list_audit

#: Rows the page shows at most (the export holds a study's whole log).
MAX_ROWS = 2000

__all__ = ["AuditFilter", "MAX_ROWS", "filter_options", "audit_rows"]


@dataclass(frozen=True)
class AuditFilter:
    """None (or empty) = no filter. ``since``/``until`` are dates, both included (UTC)."""

    study: str | None = None
    actor: str | None = None
    action: str | None = None
    entity: str | None = None
    since: date | None = None
    until: date | None = None


def filter_options(store) -> dict[str, list[str]]:
    """The actors, actions and entities that occur in the log (the filters' choices)."""
    rows = list_audit(store, limit=100_000)
    return {k: sorted({str(r[k]) for r in rows if r[k]}) for k in ("actor", "action", "entity")}


def audit_rows(store, flt: AuditFilter, limit: int = MAX_ROWS) -> list[dict]:
    """The log rows matching ``flt``, newest first, the payload as JSON text."""
    since = datetime.combine(flt.since, time.min) if flt.since else None
    until = datetime.combine(flt.until, time.min) + timedelta(days=1) if flt.until else None
    rows = list_audit(store, AuditQuery(study=flt.study or None, actor=flt.actor or None, action=flt.action or None,
                                         entity=flt.entity or None, since=since, until=until), limit=limit)
    return [{"seq": r["seq"], "time (UTC)": r["logged_at"], "actor": r["actor"], "action": r["action"],
             "entity": r["entity"], "id": r["entity_id"], "details": json.dumps(r["payload"], default=str)}
            for r in rows]
