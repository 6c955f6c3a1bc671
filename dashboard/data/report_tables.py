"""Batch concept reports on disk: Parquet parts written per shard, read back with DuckDB.

A batch run lives in one folder: ``manifest.json`` (what the rows are of: card, weights, probe
version, TCAV run, the image list) and ``part-NNNNN.parquet``, one per shard of images, each
written atomically (a temporary file, then a rename) with the run's key in its file metadata, so
a rerun skips finished parts and never mixes runs. All SQL over the parts is here.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from dashboard.data.store import StoreError

__all__ = ["MANIFEST", "write_part", "part_done", "write_manifest", "read_manifest", "list_runs", "read_rows",
           "concept_summary", "image_count"]

MANIFEST = "manifest.json"


def _part(directory: Path, index: int) -> Path:
    return Path(directory) / f"part-{index:05d}.parquet"


def write_part(directory: Path, index: int, rows: list[dict], columns: Sequence[str], run_key: str) -> Path:
    """Write one shard's rows atomically; ``run_key`` goes into the file's metadata."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in rows], schema=_schema(columns))
    table = table.replace_schema_metadata({b"conceptlens.run": run_key.encode()})
    path = _part(directory, index)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path


def _schema(columns: Sequence[str]) -> pa.Schema:
    text = {"image_id", "case_id", "truth", "model_card", "weights_sha", "target_name", "concept"}
    kinds = {"probe_version": pa.int64(), "tcav_significant": pa.bool_()}
    return pa.schema([(c, pa.string() if c in text else kinds.get(c, pa.float64())) for c in columns])


def part_done(directory: Path, index: int, run_key: str) -> bool:
    """True when the shard's part exists whole and belongs to this run."""
    path = _part(directory, index)
    if not path.is_file():
        return False
    try:
        meta = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowInvalid):
        return False
    return meta.get(b"conceptlens.run") == run_key.encode()


def write_manifest(directory: Path, manifest: dict) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f"{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, directory / MANIFEST)


def read_manifest(directory: Path) -> dict | None:
    path = Path(directory) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def list_runs(root: Path) -> list[dict]:
    """The finished batch runs under ``root`` (each manifest with its ``path``), newest first."""
    runs = []
    for d in Path(root).glob("*/"):
        m = read_manifest(d)
        if m and m.get("finished"):
            runs.append({**m, "path": str(d)})
    return sorted(runs, key=lambda m: m.get("finished", ""), reverse=True)


def _query(directory: Path, sql: str, params: Sequence = ()) -> list[dict]:
    """Run ``sql`` over the run's parts, which it names ``rows`` (one in-memory DuckDB per call)."""
    parts = sorted(str(p) for p in Path(directory).glob("part-*.parquet"))
    if not parts:
        raise StoreError(f"no batch report parts in {directory}")
    con = duckdb.connect()
    try:
        cur = con.cursor()
        # the parts as the CTE ``rows`` (a view cannot take the file list as a parameter)
        sql = sql.strip()
        head = "WITH rows AS (SELECT * FROM read_parquet(?))"
        sql = f"{head}, {sql[4:]}" if sql.upper().startswith("WITH") else f"{head} {sql}"
        cur.execute(sql, [parts, *params])
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]
    except duckdb.Error as exc:
        raise StoreError(f"cannot read the batch report in {directory}: {exc}") from exc
    finally:
        con.close()


def read_rows(directory: Path, image_id: str | None = None) -> list[dict]:
    """Rows of a batch run (of one image when given), by image then concept order as written."""
    if image_id is None:
        return _query(directory, "SELECT * FROM rows ORDER BY image_id")
    return _query(directory, "SELECT * FROM rows WHERE image_id = ?", [image_id])


def image_count(directory: Path) -> int:
    return int(_query(directory, "SELECT count(DISTINCT image_id) AS n FROM rows")[0]["n"])


def concept_summary(directory: Path) -> list[dict]:
    """Per truth label and concept: images, mean attribution share, mean area (mm^2), images where the
    concept carries the largest share, mean TCAV score; truth NULL is "unknown"."""
    return _query(directory, """
        WITH r AS (SELECT *, coalesce(truth, 'unknown') AS label FROM rows),
        top AS (SELECT image_id, arg_max(concept, attribution_share) AS top_concept
                FROM r WHERE concept <> 'unexplained' GROUP BY image_id)
        SELECT r.label AS truth, r.concept, count(DISTINCT r.image_id) AS images,
               avg(r.attribution_share) AS mean_share, avg(r.area_mm2) AS mean_area_mm2,
               count(DISTINCT CASE WHEN top.top_concept = r.concept THEN r.image_id END) AS images_top,
               avg(r.tcav_score) AS mean_tcav, avg(r.probability) AS mean_probability
        FROM r LEFT JOIN top USING (image_id)
        GROUP BY r.label, r.concept ORDER BY r.label, mean_share DESC NULLS LAST""")
