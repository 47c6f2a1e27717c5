"""Read-only SQL for `bench query`: the database is opened read-only and only queries are let through."""

from __future__ import annotations

import re

import sqlalchemy as sa

from benchsuite.errors import BenchError
from benchsuite.store.engine import check_schema, is_duckdb, make_engine, resolve_url

_READ_KEYWORDS = {"select", "with", "explain", "values", "table", "show", "describe", "summarize", "from"}


def _check_read_only(sql: str, duckdb_backend: bool) -> None:
    refuse = "bench query only reads: {} statements are refused (the database is opened read-only)"
    if duckdb_backend:
        import duckdb

        try:
            statements = duckdb.extract_statements(sql)
        except duckdb.Error as exc:
            raise BenchError(f"SQL error: {str(exc).splitlines()[0]}") from None
        if len(statements) != 1:
            raise BenchError(f"bench query takes exactly one statement, got {len(statements)}")
        kind = statements[0].type.name
        if kind not in ("SELECT", "EXPLAIN"):
            raise BenchError(refuse.format(kind))
        return
    parts = [s for s in sql.strip().rstrip(";").split(";") if s.strip()]
    if len(parts) != 1:
        raise BenchError(f"bench query takes exactly one statement, got {len(parts)}")
    first = re.match(r"\s*(\w+)", parts[0])
    if not first or first.group(1).lower() not in _READ_KEYWORDS:
        raise BenchError(refuse.format(first.group(1).upper() if first else "empty"))


def run_query(sql: str, db: str | None = None) -> tuple[list[str], list[tuple]]:
    url = resolve_url(db)
    _check_read_only(sql, is_duckdb(url))
    engine = make_engine(db, read_only=True)
    try:
        check_schema(engine)
        with engine.connect() as conn:
            result = conn.execute(sa.text(sql.replace(":", r"\:")))
            return list(result.keys()), [tuple(r) for r in result.fetchall()]
    except sa.exc.DBAPIError as exc:
        raise BenchError(f"SQL error: {str(exc.orig).splitlines()[0]}") from None
    finally:
        engine.dispose()
