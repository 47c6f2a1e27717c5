"""Faults and hostile input, through the real CLI on real files: every bad input is one line naming the
file or value and the fix, exit code 2, no traceback, and nothing written."""

import hashlib
import re
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from conftest import TINY_SPEC, rows


def one_line(result, code: int = 2) -> str:
    """The error line of a failed command, after checking it is the only thing on stderr."""
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output and ".py:" not in result.output  # no internal file:line
    return lines[0]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` by content hash: what a command left behind."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# -- bad spec files -------------------------------------------------------------------------------

@pytest.mark.parametrize("content, message", [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "a binary file, not a YAML spec"),
    ("name: caf\u00e9\n".encode("latin-1"), "line 1: not UTF-8 text (byte 0xe9); save the spec as UTF-8"),
    (b"# padding\n" * 120_000, "over the 1,048,576-byte limit of a spec"),
    (b"name: x\nfamily: " + b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
])
@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_spec_that_is_not_a_text_spec_is_one_line(workdir, cli, content, message, command):
    (workdir / "bad.yaml").write_bytes(content)
    before = snapshot(workdir)
    line = one_line(cli(command, "bad.yaml"))
    assert line.startswith("error: bad.yaml: ") and message in line
    assert snapshot(workdir) == before  # no database, no artifacts


def test_a_spec_with_a_byte_order_mark_is_read(workdir, cli):
    (workdir / "bom.yaml").write_bytes(b"\xef\xbb\xbf" + TINY_SPEC.encode())
    assert cli("validate", "bom.yaml").exit_code == 0


# -- bad databases ------------------------------------------------------------------------------

COMMANDS = [("run", "tiny.yaml"), ("query", "SELECT 1"), ("runs",), ("claims",), ("db", "upgrade"),
            ("db", "export", "out"), ("leaderboard", "build", "--out", "site")]


@pytest.mark.parametrize("db, message", [
    ("bench.duckdb", "not a valid DuckDB database file"),
    ("sqlite:///bench.sqlite", "file is not a database"),
])
def test_a_database_file_that_is_not_a_database_is_one_line(tiny_spec, cli, db, message):
    path = tiny_spec.parent / Path(db.removeprefix("sqlite:///")).name
    path.write_bytes(b"these are not the tables you are looking for\n" * 100)
    before = snapshot(tiny_spec.parent)
    for command in COMMANDS:
        line = one_line(cli(*command, "--db", db))
        assert f"{path}: cannot open the results database" in line and message in line, command
    assert snapshot(tiny_spec.parent) == before


def test_a_database_of_a_newer_schema_is_refused_untouched(tiny_spec, cli):
    assert cli("db", "upgrade").exit_code == 0
    engine = sa.create_engine("duckdb:///bench.duckdb", poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999_from_the_future'"))
    before = snapshot(tiny_spec.parent)
    for command in COMMANDS:
        line = one_line(cli(*command))
        assert "at schema revision 9999_from_the_future, newer than this benchsuite" in line, command
        assert "upgrade benchsuite" in line
    assert snapshot(tiny_spec.parent) == before


@pytest.mark.parametrize("db, message", [
    ("foo://somewhere/db", "unknown database scheme 'foo'"),
    # refused by the read-only commands before its driver is even looked for
    ("mysql+mysqldb://u:secret@host/db", "its driver MySQLdb is not installed|mysql databases cannot be opened read-only"),
    ("postgresql+psycopg://u:secret@127.0.0.1:1/db", "Connection refused"),
])
def test_an_unusable_db_url_is_one_line_without_its_password(tiny_spec, cli, db, message):
    for command in COMMANDS:
        line = one_line(cli(*command, "--db", db))
        assert re.search(message, line) and "secret" not in line, command
    assert sorted(p.name for p in tiny_spec.parent.iterdir()) == ["tiny.yaml"]


# -- Parquet import -----------------------------------------------------------------------------

@pytest.fixture
def export(tiny_spec, cli) -> Path:
    """A real export of a small database holding a spec row, and that database."""
    from benchsuite.store.engine import open_store
    from benchsuite.store.writer import record_spec

    record_spec(open_store("source.duckdb", create=True), "h1", "tiny", "tiny.yaml", TINY_SPEC)
    assert cli("db", "export", "out", "--db", "source.duckdb").exit_code == 0
    return tiny_spec.parent / "out"


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[:-20])


def _garbage(p: Path) -> None:
    p.write_bytes(b"PAR1 not really")


def _other_columns(p: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(p)
    pq.write_table(table.drop_columns(["yaml"]).replace_schema_metadata(table.schema.metadata), p)


@pytest.mark.parametrize("damage, message", [
    (_truncate, "not a readable Parquet file"),
    (_garbage, "not a readable Parquet file"),
    (_other_columns, "are not those of table specs"),
])
def test_a_corrupt_parquet_import_changes_nothing(export, cli, damage, message):
    damage(export / "specs.parquet")
    assert cli("db", "upgrade", "--db", "target.duckdb").exit_code == 0
    before = rows("target.duckdb", "SELECT count(*) FROM specs")
    for target in ("target.duckdb", "new.duckdb"):
        line = one_line(cli("db", "import", "out", "--db", target))
        assert "error: out/specs.parquet" in line and message in line
    assert rows("target.duckdb", "SELECT count(*) FROM specs") == before == [(0,)]
    assert not Path("new.duckdb").exists()
    assert one_line(cli("db", "import", "nowhere")).endswith("nowhere: no such folder (write one with `bench db export`)")


# -- bench query is read-only by construction ----------------------------------------------------

def _database_with_a_spec(db: str) -> None:
    from benchsuite.store.engine import open_store
    from benchsuite.store.writer import record_spec

    record_spec(open_store(db, create=True), "h1", "original", "tiny.yaml", TINY_SPEC)


WRITES = ["WITH x AS (SELECT 1) UPDATE specs SET name = 'pwned'", "EXPLAIN ANALYZE DELETE FROM specs",
          "EXPLAIN ANALYZE UPDATE specs SET name = 'pwned'", "DELETE FROM specs", "DROP TABLE specs",
          "PRAGMA query_only = OFF", "ATTACH DATABASE 'other.db' AS o", "SELECT 1; DELETE FROM specs"]


@pytest.mark.parametrize("db", ["bench.duckdb", "sqlite:///bench.sqlite"])
def test_query_never_writes(workdir, cli, db):
    _database_with_a_spec(db)
    before = snapshot(workdir)
    for sql in WRITES:
        line = one_line(cli("query", sql, "--db", db))
        assert "bench query only reads" in line or "exactly one statement" in line, sql
    assert snapshot(workdir) == before  # the rows, and no new file (other.db)
    ok = cli("query", "SELECT name FROM specs", "--db", db, "-f", "csv")
    assert ok.exit_code == 0 and ok.stdout.splitlines() == ["name", "original"]
    explained = cli("query", "EXPLAIN ANALYZE SELECT count(*) FROM specs" if "duckdb" in db
                    else "EXPLAIN QUERY PLAN SELECT count(*) FROM specs", "--db", db)
    assert explained.exit_code == 0, explained.output


def test_sqlite_connection_of_query_refuses_writes_itself(workdir):
    """Past the statement check, the connection is read-only: a write that slipped through fails."""
    from benchsuite.store.engine import make_engine

    _database_with_a_spec("sqlite:///bench.sqlite")
    engine = make_engine("sqlite:///bench.sqlite", read_only=True)
    for sql in ["UPDATE specs SET name = 'pwned'", "PRAGMA query_only = OFF; UPDATE specs SET name = 'pwned'"]:
        with engine.connect() as conn, pytest.raises(sa.exc.DBAPIError, match="readonly"):
            for statement in sql.split(";"):
                conn.execute(sa.text(statement))
    assert rows_sqlite(workdir / "bench.sqlite") == [("original",)]


def rows_sqlite(path: Path) -> list[tuple]:
    import sqlite3

    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT name FROM specs").fetchall()


@pytest.mark.parametrize("db, slow", [
    ("bench.duckdb", "SELECT sum(i * i) FROM range(100000000000) t(i)"),
    ("sqlite:///bench.sqlite", "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT max(x) FROM c"),
])
def test_query_stops_at_its_timeout(workdir, cli, db, slow):
    _database_with_a_spec(db)
    start = time.perf_counter()
    line = one_line(cli("query", slow, "--db", db, "--timeout", "0.5"))
    assert "the query ran past --timeout 0.5 s and was stopped" in line
    assert time.perf_counter() - start < 30  # stopped, not run to the end (hours)


def test_query_on_postgres_stops_at_its_timeout_and_explains_only_queries(pg_url, cli):
    _database_with_a_spec(pg_url)
    line = one_line(cli("query", "SELECT pg_sleep(60)", "--db", pg_url, "--timeout", "0.5"))
    assert "ran past --timeout 0.5 s" in line
    for sql in WRITES[:3]:
        assert "bench query only reads" in one_line(cli("query", sql, "--db", pg_url)), sql
    ok = cli("query", "EXPLAIN ANALYZE SELECT name FROM specs", "--db", pg_url)
    assert ok.exit_code == 0 and "Execution Time" in ok.stdout


def test_terminal_formats_are_capped_and_say_so(workdir, cli):
    _database_with_a_spec("bench.duckdb")
    sql = "SELECT i FROM range(2500) t(i) ORDER BY i"
    table = cli("query", sql, "-f", "markdown", "--max-rows", "7")
    assert table.stdout.splitlines()[2:] == [f"| {i} |" for i in range(7)]
    assert "first 7 rows shown" in table.stderr
    default = cli("query", sql)
    assert "first 1000 rows shown" in default.stderr and "999" in default.stdout and "1000 " not in default.stdout
    assert cli("query", sql, "-f", "csv").stdout.splitlines() == ["i", *map(str, range(2500))]  # uncapped
    assert cli("query", "SELECT 1 AS one", "--max-rows", "1").stderr == ""
