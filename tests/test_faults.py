"""Faults and hostile input, through the real CLI on real files: every bad input is one line naming the
file or value and the fix, exit code 2, no traceback, and nothing written."""

import errno
import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
import torch

from conftest import TINY_SPEC, make_spec, rows


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


# -- checkpoints --------------------------------------------------------------------------------

class _Planted:
    """What an attacker with write access to a shared artifacts folder would leave: unpickling it runs code."""

    def __reduce__(self):
        return os.system, (f"touch {Path.cwd() / 'pwned'}",)


def _truncated(path: Path) -> None:
    torch.save({"model": {"w": torch.ones(1000)}}, path)
    path.write_bytes(path.read_bytes()[:300])


def _not_a_checkpoint(path: Path) -> None:
    path.write_bytes(b"rsync: connection unexpectedly closed\n")


def _planted(path: Path) -> None:
    torch.save({"model": _Planted()}, path)


def _checkpoints(spec: Path, artifacts: str = "bench_artifacts") -> list[Path]:
    from benchsuite.spec import expand, load_spec, run_id

    return [Path(artifacts) / "runs" / run_id(c) / "last.pt" for c in expand(load_spec(spec))]


MEASURED = {"metrics": "run_id, name, epoch, value", "cka": "run_a, layer_a, run_b, layer_b, pc_removed, value",
            "pcs": "run_id, layer, pc1_fraction", "runs": "run_id, status, error, epochs_done"}


def assert_same_rows(db_a, db_b) -> None:
    for table, columns in MEASURED.items():
        a, b = (rows(db, f"SELECT {columns} FROM {table} ORDER BY ALL") for db in (db_a, db_b))
        assert len(a) == len(b) > 0, table
        for ra, rb in zip(a, b):
            assert ra[:-1] == rb[:-1] and (ra[-1] == rb[-1] or abs(ra[-1] - rb[-1]) < 1e-12), table


def test_a_damaged_checkpoint_is_moved_aside_and_the_run_trains_from_scratch(workdir, cli):
    (workdir / "s.yaml").write_text(make_spec(seeds="[0, 1, 2]", epochs=1))
    damaged = {}
    for path, damage in zip(_checkpoints(workdir / "s.yaml"), (_truncated, _not_a_checkpoint, _planted)):
        path.parent.mkdir(parents=True)
        damage(path)
        damaged[path] = path.read_bytes()
    result = cli("run", "s.yaml")
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stderr.splitlines() if line.startswith("note ")]
    assert len(notes) == 3 and all("last.pt: cannot be loaded (" in n and "training from scratch" in n for n in notes)
    assert "it holds more than tensors and plain values: GLOBAL posix.system" in "".join(notes) and "Traceback" not in result.output
    assert not (workdir / "pwned").exists()  # weights_only: the planted pickle never ran
    for path, content in damaged.items():
        aside, = path.parent.glob("last.pt.corrupt-*")
        assert aside.read_bytes() == content and path.is_file()
    # the rows are those of a run that never met a damaged checkpoint
    assert cli("run", "s.yaml", "--db", "clean.duckdb", "--artifacts", "clean").exit_code == 0
    assert_same_rows("bench.duckdb", "clean.duckdb")


def _poison(path: Path) -> None:
    state = torch.load(path, weights_only=True)
    state["model"] = {k: v.fill_(float("nan")) if v.is_floating_point() else v for k, v in state["model"].items()}
    torch.save(state, path)


def test_no_nan_row_from_a_model_gone_non_finite_on_any_path(workdir, cli):
    """Training losses were finite, but the final model is NaN (as after an overflow): neither the run's own
    analyses nor the family analyses that load its checkpoint store a row."""
    spec = workdir / "s.yaml"
    spec.write_text(make_spec(seeds="[0, 1]"))
    assert cli("run", spec, "--db", "first.duckdb").exit_code == 0
    for path in _checkpoints(spec):
        _poison(path)
    # run path: a new database resumes from the poisoned final checkpoints and measures them
    result = cli("run", spec, "--db", "second.duckdb")
    assert result.exit_code == 1
    assert result.stderr.count("non-finite cka.value (nan); the model's outputs overflowed") == 2
    assert rows("second.duckdb", "SELECT DISTINCT status FROM runs") == [("failed",)]
    # family path: the complete runs of the first database, measured again from their checkpoints
    spec.write_text(make_spec(seeds="[0, 1]", analyses="[cka, pcs, {kind: cross_cka, across: seeds}]"))
    result = cli("run", spec, "--db", "first.duckdb")
    assert result.exit_code == 1 and "holds non-finite weights; the run diverged" in result.stderr
    for db in ("first.duckdb", "second.duckdb"):
        for table, column in [("cka", "value"), ("pcs", "pc1_fraction"), ("metrics", "value")]:
            assert rows(db, f"SELECT count(*) FROM {table} WHERE NOT isfinite({column})") == [(0,)]
    assert rows("second.duckdb", "SELECT count(*) FROM cka") == [(0,)]
    assert rows("first.duckdb", "SELECT status FROM analyses WHERE kind = 'cross_cka'") == [("failed",)]


def test_a_damaged_checkpoint_of_a_complete_run_fails_its_family_analysis_in_one_line(workdir, cli):
    spec = workdir / "s.yaml"
    spec.write_text(make_spec(seeds="[0, 1]"))
    assert cli("run", spec).exit_code == 0
    _truncated(_checkpoints(spec)[1])
    spec.write_text(make_spec(seeds="[0, 1]", analyses="[cka, pcs, {kind: cross_cka, across: seeds}]"))
    result = cli("run", spec)
    assert result.exit_code == 1 and "cannot be loaded (" in result.stderr and "restore it from a copy" in result.stderr
    (error,), = rows("bench.duckdb", "SELECT error FROM analyses WHERE kind = 'cross_cka'")
    assert "last.pt cannot be loaded" in error and ".py:" not in error


# -- datasets: checked before any run starts ----------------------------------------------------

def test_the_headline_sweep_without_cifar10_is_one_line_and_no_rows(workdir, cli, monkeypatch):
    monkeypatch.setenv("BENCH_DATA", str(workdir / "data"))
    spec = Path(__file__).parents[1] / "specs" / "cifar_width.yaml"
    line = one_line(cli("run", spec))
    data = workdir / "data"
    assert line == (f"error: cifar10: not found in {data}; place cifar-10-python.tar.gz (md5 c58f30108f718f92721af3b95e74349a) "
                    f"in {data} or run `bench data fetch cifar10 --data-dir {data}`")
    assert list(workdir.iterdir()) == []  # no database, no artifacts: nothing to clean up


def test_a_data_folder_that_is_a_file_or_a_too_large_subset_is_one_line(workdir, cli, monkeypatch):
    (workdir / "datafile").write_text("not a folder")
    monkeypatch.setenv("BENCH_DATA", str(workdir / "datafile"))
    line = one_line(cli("run", Path(__file__).parents[1] / "specs" / "cifar_width.yaml"))
    assert "the data folder" in line and "is a file, not a folder" in line
    (workdir / "big.yaml").write_text(make_spec(train_size=5000))
    line = one_line(cli("run", "big.yaml"))
    assert line == "error: big.yaml: dataset.train_size: subset of 5000 examples is not possible: the split has 1258 (digits)"
    assert sorted(p.name for p in workdir.iterdir()) == ["big.yaml", "datafile"]


def test_a_tampered_cifar_folder_is_refused_from_the_cli_before_any_run(workdir, cli, monkeypatch):
    from benchsuite.data import cifar
    from test_data_cifar import _write_folder

    monkeypatch.setattr(cifar, "FILES_MD5", {name: {} for name in cifar.LAYOUTS})
    monkeypatch.setenv("XDG_CACHE_HOME", str(workdir / "cache"))
    data = workdir / "data"
    _write_folder(data, "cifar10")  # a miniature, published: its md5s are the table's
    batch = data / "cifar-10-batches-py" / "data_batch_4"
    batch.write_bytes(batch.read_bytes()[:-1] + b"\x00")
    (workdir / "c.yaml").write_text(make_spec(train_size=20, eval_size=6).replace("digits", "cifar10"))
    line = one_line(cli("run", "c.yaml", "--data-dir", data))
    assert f"cifar10: {batch} is not the published file (its md5 differs)" in line
    assert not (workdir / "bench.duckdb").exists() and not (workdir / "bench_artifacts").exists()


# -- a full disk --------------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A real 16 MiB filesystem (tmpfs) that can be filled up; CI runs as root, which may mount one."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


def fill(disk: Path) -> Path:
    """Write to `disk` until it has no byte left; remove the file returned to free the space."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def _bench(*args: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "benchsuite", *args], env=env, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_a_full_disk_while_checkpointing_keeps_the_last_checkpoint_and_the_rerun_completes(workdir, small_disk, cli):
    (workdir / "s.yaml").write_text(make_spec(epochs=5))
    artifacts = small_disk / "art"
    proc = _bench("run", "s.yaml", "--artifacts", str(artifacts), cwd=workdir)
    checkpoint, = _checkpoints(workdir / "s.yaml", str(artifacts))
    deadline = time.time() + 120
    while not checkpoint.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.kill()  # SIGKILL: a checkpoint of some epoch before the last, and a run left `running`
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    kept = checkpoint.read_bytes()
    filler = fill(small_disk)

    full = _bench("run", "s.yaml", "--artifacts", str(artifacts), cwd=workdir)
    out, _ = full.communicate(timeout=300)
    assert full.returncode == 1, out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {checkpoint.parent}: no space left on the device for checkpoint last.pt; the previous "
                      "checkpoint is intact: free space and rerun the same command to resume"], out
    assert "Traceback" not in out
    assert checkpoint.read_bytes() == kept and sorted(p.name for p in checkpoint.parent.iterdir()) == ["last.pt"]
    assert rows(workdir / "bench.duckdb", "SELECT status FROM runs") == [("running",)]

    filler.unlink()
    again = _bench("run", "s.yaml", "--artifacts", str(artifacts), cwd=workdir)
    out, _ = again.communicate(timeout=300)
    assert again.returncode == 0 and "resumed from epoch" in out, out
    assert cli("run", "s.yaml", "--db", "clean.duckdb", "--artifacts", "clean").exit_code == 0
    assert_same_rows(workdir / "bench.duckdb", workdir / "clean.duckdb")


def test_a_full_disk_under_the_database_leaves_it_as_it_was_and_the_rerun_completes(workdir, small_disk, cli):
    db = small_disk / "bench.duckdb"
    (workdir / "s.yaml").write_text(make_spec())
    assert cli("db", "upgrade", "--db", db).exit_code == 0
    filler = fill(small_disk)
    line = one_line(cli("run", "s.yaml", "--db", db), code=1)
    assert line == (f"error: {db}: no space left on the device for the database; the write was rolled back and "
                    "the database is as it was: free space and rerun the same command")
    filler.unlink()
    assert [rows(db, f"SELECT count(*) FROM {t}") for t in ("specs", "runs", "metrics")] == [[(0,)]] * 3
    assert cli("run", "s.yaml", "--db", db).exit_code == 0
    assert cli("run", "s.yaml", "--db", "clean.duckdb", "--artifacts", "clean").exit_code == 0
    assert_same_rows(db, workdir / "clean.duckdb")


def test_an_output_path_that_cannot_be_written_is_one_line(tiny_spec, cli):
    _database_with_a_spec("bench.duckdb")
    (tiny_spec.parent / "taken").write_text("a file where a folder should go")
    line = one_line(cli("leaderboard", "build", "--out", "taken"))
    assert line == "error: taken: File exists"
    assert one_line(cli("claims", "--write", "taken/REPRODUCTION.md")) == "error: taken: File exists"
