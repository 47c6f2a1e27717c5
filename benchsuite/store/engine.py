"""Engine factory (DuckDB file by default, any SQLAlchemy URL) and schema checks."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from urllib.parse import quote, unquote

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


def _file_backend(url: str) -> bool:
    """DuckDB or SQLite: a file on this machine (`url` may be a bare driver name)."""
    return url.split(":", 1)[0].split("+", 1)[0] in ("duckdb", "sqlite")


def shown(url: str | sa.engine.URL) -> str:
    """A database as messages show it: a file's path, a server's URL without its password."""
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        return str(url)
    if _file_backend(parsed.drivername) and parsed.database:
        # a read-only SQLite URI names its file too
        return str(Path(unquote(parsed.database.removeprefix("file:"))).resolve())
    return parsed.render_as_string(hide_password=True)


def database_exists(db: str | None = None) -> bool:
    """False only for a DuckDB or SQLite file that is not there yet (a server database is assumed to exist)."""
    url = resolve_url(db)
    if not _file_backend(url):
        return True
    path = _parse(url).database
    return bool(path) and path != ":memory:" and Path(path).exists()


def _parse(url: str) -> sa.engine.URL:
    """The URL, with a malformed one or an unknown scheme as one line."""
    try:
        parsed = sa.engine.make_url(url)
        parsed.get_dialect()
        return parsed
    except sa.exc.NoSuchModuleError:
        raise BenchError(f"--db {shown(url)}: unknown database scheme {url.split(':', 1)[0]!r}; give a file path "
                         "(DuckDB), sqlite:///PATH or postgresql+psycopg://USER@HOST/DB") from None
    except sa.exc.ArgumentError:
        raise BenchError(f"--db {url!r} is neither a file path nor a database URL (e.g. postgresql+psycopg://USER@HOST/DB)") from None


def _create(url: str, **kwargs) -> Engine:
    """sa.create_engine, with a driver that is not installed as one line."""
    try:
        return sa.create_engine(url, **kwargs)
    except ImportError as exc:
        raise BenchError(f"--db {shown(url)}: its driver {exc.name} is not installed "
                         "(for PostgreSQL: pip install 'benchsuite[postgres]')") from None


def open_error(url: str | sa.engine.URL, exc: sa.exc.DBAPIError) -> BenchError:
    """A database that cannot be opened (not a database, locked, unreachable), as one line."""
    reason = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else type(exc.orig).__name__
    fix = ("pass --db with a benchsuite database, or move this file away" if _file_backend(str(url))
           else "check the server, user and database of --db")
    return BenchError(f"{shown(url)}: cannot open the results database ({reason}); {fix}")


def advisory_key(*names: str) -> int:
    """A signed 64-bit key for PostgreSQL advisory locks, from a namespace and a name."""
    return int.from_bytes(hashlib.sha256(":".join(names).encode()).digest()[:8], "big", signed=True)


def advisory_lock(conn: sa.Connection, *names: str) -> None:
    """Hold a lock on `names` until the transaction ends, so concurrent drivers writing the same keys
    take turns. PostgreSQL only: DuckDB allows one writing process per file anyway."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(advisory_key(*names))))


def make_engine(db: str | None = None, read_only: bool = False) -> Engine:
    """An engine on the results database. `read_only` is enforced by the database itself, never by
    inspecting SQL: DuckDB opens the file read-only, PostgreSQL runs read-only transactions, SQLite opens
    the file with mode=ro and query_only; other backends cannot promise that and are refused."""
    url = resolve_url(db)
    parsed = _parse(url)
    if read_only and _file_backend(url) and not database_exists(url):
        raise BenchError(f"{parsed.database}: no results database here; run `bench run SPEC` first or pass --db")
    if is_duckdb(url):
        args = {"read_only": True, "config": {"enable_external_access": False}} if read_only else {}
        # NullPool: a DuckDB file can be open read-write in one process only; don't hold it idle.
        engine = _create(url, connect_args=args, poolclass=sa.pool.NullPool)
        sa.event.listen(engine, "do_connect", _wait_for_file_lock)
        return engine
    if not read_only:
        return _create(url)
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        return _create(url, connect_args={"options": "-c default_transaction_read_only=on"})
    if backend == "sqlite":
        path = quote(str(Path(parsed.database).resolve()))
        engine = _create(f"sqlite:///file:{path}?mode=ro&uri=true", poolclass=sa.pool.NullPool)
        sa.event.listen(engine, "connect", lambda dbapi, _: dbapi.execute("PRAGMA query_only = ON"))
        return engine
    raise BenchError(f"--db {shown(url)}: {backend} databases cannot be opened read-only here, so they are refused; "
                     "use DuckDB, SQLite or PostgreSQL")


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


def _scripts():
    from alembic.script import ScriptDirectory
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    return ScriptDirectory.from_config(cfg)


def head_revision() -> str:
    return _scripts().get_current_head()


def _known_revisions() -> set[str]:
    return {s.revision for s in _scripts().walk_revisions()}


def current_revision(engine: Engine) -> str | None:
    """The database's schema revision (None when empty); the first contact with the database, so a file
    that is not a database, or a server that refuses us, ends here in one line."""
    from alembic.migration import MigrationContext

    import benchsuite.store.alembic_duckdb  # noqa: F401

    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except sa.exc.DBAPIError as exc:
        raise open_error(engine.url, exc) from None


def _refuse_newer(engine: Engine, current: str | None) -> None:
    if current is not None and current not in _known_revisions():
        raise BenchError(f"{shown(engine.url)}: the database is at schema revision {current}, newer than this "
                         f"benchsuite knows (its newest is {head_revision()}); upgrade benchsuite to use it")


def upgrade(engine: Engine, revision: str = "head") -> None:
    from alembic import command
    from alembic.util import CommandError

    _refuse_newer(engine, current_revision(engine))
    try:
        with engine.begin() as conn:
            advisory_lock(conn, "schema")  # two drivers creating one database: the second finds it migrated
            command.upgrade(_alembic_config(conn), revision)
    except CommandError as exc:
        raise BenchError(f"bench db upgrade {revision}: {exc}") from None


def check_schema(engine: Engine) -> None:
    """Every command checks the schema version before it reads or writes."""
    current, head = current_revision(engine), head_revision()
    _refuse_newer(engine, current)
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
