"""Transactional writes. Rows of a result replace any earlier rows with the same keys, so a retried
or re-run job never duplicates anything, and a reader never sees half a result."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from contextlib import contextmanager
from typing import Any, Iterable, Iterator

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from benchsuite.store import tables as t
from benchsuite.errors import DiskFullError
from benchsuite.store.engine import advisory_key, advisory_lock, shown


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
    measure_id: str = ""  # the measurement setting whose probe points the rows' layer indices refer to


@dataclass
class RunRows:
    """Everything a finished job hands to the driver, which is the only writer."""

    run: dict[str, Any]  # the runs row
    metrics: list[dict] = field(default_factory=list)
    layers: list[dict] = field(default_factory=list)  # the probe points of one measurement setting
    measure_id: str = ""
    analyses: list[AnalysisRows] = field(default_factory=list)
    resumed_from: int = 0  # epochs the checkpoint already held (not stored; for the progress log)
    notes: list[str] = field(default_factory=list)  # for the user's terminal, not stored (a checkpoint set aside)


@contextmanager
def _transaction(engine: Engine) -> Iterator[Connection]:
    """engine.begin(), with a full disk as one line: the write rolled back, the database is as it was."""
    try:
        with engine.begin() as conn:
            yield conn
    except sa.exc.DBAPIError as exc:
        if "No space left on device" in str(exc.orig):
            raise DiskFullError(f"{shown(engine.url)}: no space left on the device for the database; the write was "
                                "rolled back and the database is as it was: free space and rerun the same command") from None
        raise


def _replace(conn: Connection, table: sa.Table, rows: list[dict], **where: Any) -> None:
    conn.execute(table.delete().where(*(table.c[k] == v for k, v in where.items())))
    if rows:
        conn.execute(table.insert(), rows)


def _upsert_one(conn: Connection, table: sa.Table, row: dict) -> None:
    key = {c.name: row[c.name] for c in table.primary_key.columns}
    conn.execute(table.delete().where(*(table.c[k] == v for k, v in key.items())))
    conn.execute(table.insert(), [row])


def record_spec(engine: Engine, spec_hash: str, name: str, path: str, text: str) -> None:
    with _transaction(engine) as conn:
        advisory_lock(conn, "spec", spec_hash)
        if conn.execute(sa.select(t.specs.c.spec_hash).where(t.specs.c.spec_hash == spec_hash)).first() is None:
            conn.execute(t.specs.insert(), [dict(spec_hash=spec_hash, name=name, path=path, yaml=text, created_at=now())])


def set_run_status(engine: Engine, run: dict[str, Any], status: str, error: str | None = None) -> None:
    """Insert or update a run's row with a new status (running, failed), keeping its other fields."""
    with _transaction(engine) as conn:
        advisory_lock(conn, "run", run["run_id"])
        old = conn.execute(sa.select(t.runs).where(t.runs.c.run_id == run["run_id"])).mappings().first()
        row = {**(dict(old) if old else {}), **run, "status": status, "error": error, "updated_at": now()}
        row.setdefault("created_at", now())
        _upsert_one(conn, t.runs, row)


def record_progress(engine: Engine, run_id: str, epochs_done: int, metrics: list[dict]) -> None:
    """A running run's epochs_done and the metrics of its latest epoch, in one short transaction, so that
    readers in other processes (`bench runs`) see the current epoch; the run's final write replaces them."""
    with engine.begin() as conn:
        advisory_lock(conn, "run", run_id)
        conn.execute(t.metrics.delete().where(t.metrics.c.run_id == run_id, t.metrics.c.epoch == epochs_done))
        if metrics:
            conn.execute(t.metrics.insert(), [{"run_id": run_id, **m, "epoch": epochs_done} for m in metrics])
        conn.execute(t.runs.update().where(t.runs.c.run_id == run_id, t.runs.c.status == "running")
                     .values(epochs_done=epochs_done, updated_at=now()))


def write_analysis(conn: Connection, a: AnalysisRows) -> None:
    advisory_lock(conn, "analysis", a.analysis_id)
    for table_name, rows in a.rows.items():
        rows = [{**r, "analysis_id": a.analysis_id} for r in rows]
        _replace(conn, t.metadata.tables[table_name], rows, analysis_id=a.analysis_id)
    _upsert_one(conn, t.analyses, dict(
        analysis_id=a.analysis_id, kind=a.kind, run_ids=json.dumps(a.run_ids), options=json.dumps(a.options, sort_keys=True),
        status=a.status, error=a.error, created_at=now(), measure_id=a.measure_id))


def write_run(engine: Engine, result: RunRows) -> None:
    """All of a run's rows in one transaction, its status last."""
    run_id = result.run["run_id"]
    with _transaction(engine) as conn:
        advisory_lock(conn, "run", run_id)  # concurrent drivers: delete + insert of one run never interleave
        _replace(conn, t.metrics, result.metrics, run_id=run_id)
        _replace(conn, t.layers, result.layers, run_id=run_id, measure_id=result.measure_id)
        for a in result.analyses:
            write_analysis(conn, a)
        old = conn.execute(sa.select(t.runs.c.created_at).where(t.runs.c.run_id == run_id)).scalar()
        _upsert_one(conn, t.runs, {**result.run, "created_at": old or now(), "updated_at": now()})


def write_analyses(engine: Engine, results: Iterable[AnalysisRows]) -> None:
    with _transaction(engine) as conn:
        for a in results:
            write_analysis(conn, a)


def run_statuses(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.select(t.runs.c.run_id, t.runs.c.status)).all())


def complete_analyses(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(sa.select(t.analyses.c.analysis_id).where(t.analyses.c.status == "complete")).scalars())


class RunClaims:
    """Runs this driver is working on, announced to the other drivers of a PostgreSQL database by session
    advisory locks, so that two drivers on overlapping specs never train the same run twice. The server drops
    the claims of a driver that dies along with its connection. On DuckDB (one writer) every claim succeeds."""

    def __init__(self, engine: Engine):
        shared = engine.dialect.name == "postgresql"
        self.conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT") if shared else None

    def take(self, run_id: str, analysis_ids: Iterable[str] = ()) -> bool:
        """False when another driver holds the run, or completed it (with these analyses) since the plan."""
        if self.conn is None:
            return True
        if not self.conn.execute(sa.select(sa.func.pg_try_advisory_lock(advisory_key("claim", run_id)))).scalar():
            return False
        ids = set(analysis_ids)
        status = self.conn.execute(sa.select(t.runs.c.status).where(t.runs.c.run_id == run_id)).scalar()
        done = self.conn.execute(sa.select(sa.func.count()).where(
            t.analyses.c.analysis_id.in_(ids), t.analyses.c.status == "complete")).scalar()
        if status == "complete" and done == len(ids):
            self.release(run_id)
            return False
        return True

    def release(self, run_id: str) -> None:
        if self.conn is not None:
            self.conn.execute(sa.select(sa.func.pg_advisory_unlock(advisory_key("claim", run_id))))

    def __enter__(self) -> "RunClaims":
        return self

    def __exit__(self, *exc) -> None:
        if self.conn is not None:
            # close the server session itself (a pooled connection would keep the claims it still holds)
            self.conn.invalidate()
            self.conn.close()
