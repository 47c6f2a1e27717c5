"""Read-only SQL for `bench query`. The database itself refuses writes (`make_engine(read_only=True)`: a
read-only DuckDB file, read-only PostgreSQL transactions, SQLite with mode=ro and query_only); the check
of the statement in front of it only says so in plain words, and keeps EXPLAIN ANALYZE to queries."""

from __future__ import annotations

import re
import threading

import sqlalchemy as sa

from benchsuite.errors import BenchError
from benchsuite.store.engine import check_schema, is_duckdb, make_engine, resolve_url

DEFAULT_TIMEOUT = 300.0  # seconds; a query past it is interrupted by the database
_READ_KEYWORDS = {"select", "with", "values", "table", "show", "describe", "summarize", "from"}
_EXPLAIN = re.compile(r"\s*explain\b(\s+query\s+plan\b)?(\s+analy[sz]e\b)?(\s+verbose\b)?(\s*\([^)]*\))?", re.IGNORECASE)
_REFUSE = "bench query only reads: {} statements are refused (the database is opened read-only)"


def _kind(sql: str, duckdb_backend: bool) -> str:
    """The kind of the one statement in `sql` (SELECT, UPDATE, ...); EXPLAIN of X is X's kind."""
    if duckdb_backend:
        import duckdb

        try:
            statements = duckdb.extract_statements(sql)
        except duckdb.Error as exc:
            raise BenchError(f"SQL error: {str(exc).splitlines()[0]}") from None
        count, kind = len(statements), statements[0].type.name if statements else "empty"
    else:
        parts = [s for s in sql.strip().rstrip(";").split(";") if s.strip()]
        first = re.match(r"\s*(\w+)", parts[0]) if parts else None
        count, kind = len(parts), first.group(1).upper() if first else "empty"
        kind = "SELECT" if kind.lower() in _READ_KEYWORDS else kind
    if count != 1:
        raise BenchError(f"bench query takes exactly one statement, got {count}")
    explain = _EXPLAIN.match(sql)
    if kind in ("EXPLAIN", "EXPLAIN_ANALYZE") and explain:  # EXPLAIN ANALYZE runs its statement: a query only
        inner = sql[explain.end():]
        return _kind(inner, duckdb_backend) if inner.strip() else "empty"
    return kind


def _check_read_only(sql: str, duckdb_backend: bool) -> None:
    kind = _kind(sql, duckdb_backend)
    if kind != "SELECT":
        raise BenchError(_REFUSE.format(kind))


class _Deadline:
    """Interrupts the query of `conn` after `seconds`, through the driver's own call (DuckDB and sqlite3:
    interrupt(); psycopg: cancel()); `fired` tells a timeout from any other error."""

    def __init__(self, conn: sa.Connection, seconds: float):
        raw = conn.connection.dbapi_connection
        stop = getattr(raw, "interrupt", None) or getattr(raw, "cancel", None)
        self.fired = False

        def fire():
            self.fired = True
            stop()

        self.timer = threading.Timer(seconds, fire) if stop else None

    def __enter__(self):
        if self.timer:
            self.timer.start()
        return self

    def __exit__(self, *exc):
        if self.timer:
            self.timer.cancel()


# `bench runs` and benchsuite.open().runs(). round(x * 10) / 10: PostgreSQL has no round(double precision, int)
RUNS_SQL = ("SELECT r.name, r.seed, r.dataset, r.status, r.epochs_done AS epochs, "
            "(SELECT m.value FROM metrics m WHERE m.run_id = r.run_id AND m.name = 'eval_acc' "
            " ORDER BY m.epoch DESC LIMIT 1) AS eval_acc, round(r.train_seconds * 10) / 10 AS train_s, r.run_id, r.error "
            "FROM runs r ORDER BY r.family, r.name, r.seed")


def run_query(sql: str, db: str | None = None, timeout: float = DEFAULT_TIMEOUT,
              max_rows: int | None = None) -> tuple[list[str], list[tuple]]:
    """Columns and rows of one read-only query, stopped after `timeout` seconds. With `max_rows`, at most
    max_rows + 1 rows are fetched, so a caller can tell that there are more."""
    url = resolve_url(db)
    _check_read_only(sql, is_duckdb(url))
    engine = make_engine(db, read_only=True)
    deadline = None
    try:
        check_schema(engine)
        with engine.connect() as conn, _Deadline(conn, timeout) as deadline:
            result = conn.execute(sa.text(sql.replace(":", r"\:")))
            if not result.returns_rows:
                return [], []
            rows = result.fetchall() if max_rows is None else result.fetchmany(max_rows + 1)
            return list(result.keys()), [tuple(r) for r in rows]
    except sa.exc.DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0]
        if deadline is not None and deadline.fired:
            raise BenchError(f"the query ran past --timeout {timeout:g} s and was stopped; narrow it, add a LIMIT "
                             "or raise --timeout") from None
        if re.search(r"read-only|readonly", reason, re.IGNORECASE):
            raise BenchError(f"bench query only reads: the database refused a write ({reason})") from None
        raise BenchError(f"SQL error: {reason}") from None
    finally:
        engine.dispose()
