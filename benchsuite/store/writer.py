"""Transactional writes. Rows of a result replace any earlier rows with the same keys, so a retried
or re-run job never duplicates anything, and a reader never sees half a result."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any, Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from benchsuite.store import tables as t


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass
class AnalysisRows:
    """One analysis's result: its row in `analyses` and its long-format rows per table."""

    analysis_id: str
    kind: str
    run_ids: list[str]
    options: dict[str, Any]
    rows: dict[str, list[dict]] = field(default_factory=dict)  # table name -> rows
    status: str = "complete"
    error: str | None = None


@dataclass
class RunRows:
    """Everything a finished job hands to the driver, which is the only writer."""

    run: dict[str, Any]  # the runs row
    metrics: list[dict] = field(default_factory=list)
    layers: list[dict] = field(default_factory=list)
    analyses: list[AnalysisRows] = field(default_factory=list)
    resumed_from: int = 0  # epochs the checkpoint already held (not stored; for the progress log)


def _replace(conn: Connection, table: sa.Table, rows: list[dict], **where: Any) -> None:
    conn.execute(table.delete().where(*(table.c[k] == v for k, v in where.items())))
    if rows:
        conn.execute(table.insert(), rows)


def _upsert_one(conn: Connection, table: sa.Table, row: dict) -> None:
    key = {c.name: row[c.name] for c in table.primary_key.columns}
    conn.execute(table.delete().where(*(table.c[k] == v for k, v in key.items())))
    conn.execute(table.insert(), [row])


def record_spec(engine: Engine, spec_hash: str, name: str, path: str, text: str) -> None:
    with engine.begin() as conn:
        if conn.execute(sa.select(t.specs.c.spec_hash).where(t.specs.c.spec_hash == spec_hash)).first() is None:
            conn.execute(t.specs.insert(), [dict(spec_hash=spec_hash, name=name, path=path, yaml=text, created_at=now())])


def set_run_status(engine: Engine, run: dict[str, Any], status: str, error: str | None = None) -> None:
    """Insert or update a run's row with a new status (running, failed), keeping its other fields."""
    with engine.begin() as conn:
        old = conn.execute(sa.select(t.runs).where(t.runs.c.run_id == run["run_id"])).mappings().first()
        row = {**(dict(old) if old else {}), **run, "status": status, "error": error, "updated_at": now()}
        row.setdefault("created_at", now())
        _upsert_one(conn, t.runs, row)


def write_analysis(conn: Connection, a: AnalysisRows) -> None:
    for table_name, rows in a.rows.items():
        rows = [{**r, "analysis_id": a.analysis_id} for r in rows]
        _replace(conn, t.metadata.tables[table_name], rows, analysis_id=a.analysis_id)
    _upsert_one(conn, t.analyses, dict(
        analysis_id=a.analysis_id, kind=a.kind, run_ids=json.dumps(a.run_ids), options=json.dumps(a.options, sort_keys=True),
        status=a.status, error=a.error, created_at=now()))


def write_run(engine: Engine, result: RunRows) -> None:
    """All of a run's rows in one transaction, its status last."""
    run_id = result.run["run_id"]
    with engine.begin() as conn:
        _replace(conn, t.metrics, result.metrics, run_id=run_id)
        _replace(conn, t.layers, result.layers, run_id=run_id)
        for a in result.analyses:
            write_analysis(conn, a)
        old = conn.execute(sa.select(t.runs.c.created_at).where(t.runs.c.run_id == run_id)).scalar()
        _upsert_one(conn, t.runs, {**result.run, "created_at": old or now(), "updated_at": now()})


def write_analyses(engine: Engine, results: Iterable[AnalysisRows]) -> None:
    with engine.begin() as conn:
        for a in results:
            write_analysis(conn, a)


def run_statuses(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.select(t.runs.c.run_id, t.runs.c.status)).all())


def complete_analyses(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(sa.select(t.analyses.c.analysis_id).where(t.analyses.c.status == "complete")).scalars())
