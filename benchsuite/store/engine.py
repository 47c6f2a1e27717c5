"""Engine factory (DuckDB file by default, any SQLAlchemy URL) and schema checks."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from benchsuite.errors import BenchError

DEFAULT_DB = "bench.duckdb"
LOCK_WAIT_SECONDS = 30.0  # how long a DuckDB connection waits for another process to close the file


def resolve_url(db: str | None = None) -> str:
    """--db, else BENCH_DB, else bench.duckdb here. A plain path means a DuckDB file."""
    db = db or os.environ.get("BENCH_DB") or DEFAULT_DB
    if "://" in db:
        return db
    return f"duckdb:///{Path(db).expanduser().resolve()}"


def is_duckdb(url: str) -> bool:
    return url.startswith("duckdb:")


def database_exists(db: str | None = None) -> bool:
    """False only for a DuckDB file that is not there yet (a server database is assumed to exist)."""
    url = resolve_url(db)
    return not is_duckdb(url) or Path(sa.engine.make_url(url).database).exists()


def advisory_key(*names: str) -> int:
    """A signed 64-bit key for PostgreSQL advisory locks, from a namespace and a name."""
    return int.from_bytes(hashlib.sha256(":".join(names).encode()).digest()[:8], "big", signed=True)


def advisory_lock(conn: sa.Connection, *names: str) -> None:
    """Hold a lock on `names` until the transaction ends, so concurrent drivers writing the same keys
    take turns. PostgreSQL only: DuckDB allows one writing process per file anyway."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(advisory_key(*names))))


def make_engine(db: str | None = None, read_only: bool = False) -> Engine:
    url = resolve_url(db)
    if is_duckdb(url):
        path = sa.engine.make_url(url).database
        if read_only and not Path(path).exists():
            raise BenchError(f"{path}: no results database here; run `bench run SPEC` first or pass --db")
        args = {"read_only": True, "config": {"enable_external_access": False}} if read_only else {}
        # NullPool: a DuckDB file can be open read-write in one process only; don't hold it idle.
        engine = sa.create_engine(url, connect_args=args, poolclass=sa.pool.NullPool)
        sa.event.listen(engine, "do_connect", _wait_for_file_lock)
        return engine
    kwargs = {}
    if read_only and url.startswith("postgresql"):
        kwargs["connect_args"] = {"options": "-c default_transaction_read_only=on"}
    return sa.create_engine(url, **kwargs)


def _wait_for_file_lock(dialect, conn_rec, cargs, cparams):
    """Connect to a DuckDB file, waiting while another process holds it: every process keeps the file open
    only for one transaction, so a driver writing progress and `bench runs` reading it take turns."""
    import duckdb

    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        try:
            return dialect.connect(*cargs, **cparams)
        except duckdb.IOException as exc:
            if "Could not set lock" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _alembic_config(connection):
    from alembic.config import Config

    import benchsuite.store.alembic_duckdb  # noqa: F401  (registers the duckdb dialect with Alembic)

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.attributes["connection"] = connection
    return cfg


def migrations_dir() -> Path:
    here = Path(__file__).resolve().parents[2] / "migrations"
    if here.is_dir():
        return here
    raise BenchError("the Alembic migrations folder is missing; install benchsuite from its repository (pip install -e .)")


def head_revision() -> str:
    from alembic.script import ScriptDirectory
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    return ScriptDirectory.from_config(cfg).get_current_head()


def current_revision(engine: Engine) -> str | None:
    from alembic.migration import MigrationContext

    import benchsuite.store.alembic_duckdb  # noqa: F401

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    from alembic import command

    with engine.begin() as conn:
        advisory_lock(conn, "schema")  # two drivers creating one database: the second finds it migrated
        command.upgrade(_alembic_config(conn), revision)


def check_schema(engine: Engine) -> None:
    """Every command checks the schema version before it reads or writes."""
    current, head = current_revision(engine), head_revision()
    if current != head:
        raise BenchError(
            f"results database schema is at {current or 'nothing'}, this benchsuite needs {head}; run `bench db upgrade`")


def open_store(db: str | None = None, create: bool = False) -> Engine:
    """An engine for writing; a new database is created and migrated when `create`."""
    engine = make_engine(db)
    if create and current_revision(engine) is None:
        upgrade(engine)
    check_schema(engine)
    return engine
