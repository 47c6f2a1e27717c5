"""PostgreSQL as the results store, on a real server started once per test session: migrations, a sweep
with the same rows as on DuckDB, read-only queries, concurrent writers and drivers; moving results
between databases with `bench db export` / `bench db import`."""

import math
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from benchsuite.store import tables
from benchsuite.store.engine import current_revision, head_revision, make_engine, upgrade
from benchsuite.store.writer import AnalysisRows, RunRows, set_run_status, write_run
from conftest import make_spec

TINY = make_spec("tiny_pg", train_size=200, eval_size=100, seeds="[0, 1]", epochs=1)
VOLATILE = {"created_at", "updated_at", "train_seconds", "measure_seconds", "device", "path"}  # differ run to run


def table_rows(db: str, table: sa.Table, columns=None) -> list[tuple]:
    """Every row of a table in key order; `db` is a DuckDB path or any URL."""
    engine = make_engine(db)
    try:
        columns = [c for c in table.columns if columns is None or c.name in columns]
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.select(*columns).order_by(*table.primary_key.columns))]
    finally:
        engine.dispose()


def deterministic(db: str) -> dict[str, list[tuple]]:
    return {name: table_rows(db, table, {c.name for c in table.columns} - VOLATILE)
            for name, table in tables.metadata.tables.items()}


def everything(db: str) -> dict[str, list[tuple]]:
    return {name: table_rows(db, table) for name, table in tables.metadata.tables.items()}


def assert_same(a: dict[str, list[tuple]], b: dict[str, list[tuple]]) -> None:
    """Equal tables, floats to float32 precision: the DuckDB schema's FLOAT is 32-bit, PostgreSQL's 64-bit."""
    assert a.keys() == b.keys()
    for name in a:
        assert len(a[name]) == len(b[name]), name
        for ra, rb in zip(a[name], b[name]):
            assert len(ra) == len(rb)
            for x, y in zip(ra, rb):
                assert x == y or isinstance(x, float) and math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-30), (name, ra, rb)


def test_migrations_on_postgres(pg_url, cli):
    engine = make_engine(pg_url)
    upgrade(engine, "0001")
    refused = cli("query", "SELECT 1", "--db", pg_url)
    assert refused.exit_code == 2 and "run `bench db upgrade`" in refused.stderr
    result = cli("db", "upgrade", "--db", pg_url)
    assert result.exit_code == 0, result.output
    assert current_revision(engine) == head_revision()
    assert cli("db", "upgrade", "--db", pg_url).exit_code == 0  # again: nothing to do
    inspector = sa.inspect(engine)
    for name, table in tables.metadata.tables.items():
        assert {c["name"] for c in inspector.get_columns(name)} == {c.name for c in table.columns}, name
        assert set(inspector.get_pk_constraint(name)["constrained_columns"]) == {c.name for c in table.primary_key}, name


def test_sweep_on_postgres_stores_what_duckdb_stores_and_moves_between_them(pg_url, workdir, cli):
    (workdir / "tiny.yaml").write_text(TINY)
    duck = str(workdir / "local.duckdb")
    for db in (pg_url, duck):
        result = cli("run", "tiny.yaml", "--db", db)
        assert result.exit_code == 0, result.output
    on_pg = deterministic(pg_url)
    assert_same(on_pg, deterministic(duck))
    assert all(on_pg[t] for t in ("runs", "metrics", "layers", "analyses", "cka", "pcs", "pc_scores", "pc_cosines"))
    again = cli("run", "tiny.yaml", "--db", pg_url)
    assert again.exit_code == 0 and "0 of 2 runs to do" in again.stderr
    runs = cli("runs", "--db", pg_url, "-f", "csv")
    assert runs.exit_code == 0 and runs.stdout.count("complete") == 2

    # PostgreSQL -> a new DuckDB file: the same rows, to the microsecond; importing twice changes nothing
    exported = cli("db", "export", str(workdir / "pg_export"), "--db", pg_url, "--format", "parquet")
    assert exported.exit_code == 0, exported.output
    assert {p.stem for p in (workdir / "pg_export").glob("*.parquet")} == set(tables.metadata.tables)
    copy = str(workdir / "copy.duckdb")
    for _ in range(2):
        imported = cli("db", "import", str(workdir / "pg_export"), "--db", copy)
        assert imported.exit_code == 0, imported.output
        assert_same(everything(copy), everything(pg_url))
    # DuckDB -> PostgreSQL, which holds the same runs: merged by key, nothing duplicated
    assert cli("db", "export", str(workdir / "duck_export"), "--db", duck).exit_code == 0
    assert cli("db", "import", str(workdir / "duck_export"), "--db", pg_url).exit_code == 0
    assert_same(deterministic(pg_url), on_pg)


def test_query_on_postgres_is_read_only(pg_url, cli):
    engine = make_engine(pg_url)
    upgrade(engine)
    set_run_status(engine, fake_run("r1")["run"], "running")
    for sql in ["DELETE FROM runs", "DROP TABLE cka", "UPDATE runs SET status = 'x'", "CREATE TABLE t (a INT)",
                "SELECT 1; DROP TABLE runs", "INSERT INTO metrics VALUES ('x', 'y', 1, 2.0)"]:
        result = cli("query", sql, "--db", pg_url)
        assert result.exit_code == 2 and ("only reads" in result.stderr or "exactly one statement" in result.stderr), sql
    # a query that writes gets past the statement check; the server refuses it
    sneaky = cli("query", "WITH d AS (DELETE FROM runs RETURNING run_id) SELECT * FROM d", "--db", pg_url)
    assert sneaky.exit_code == 2 and "read-only transaction" in sneaky.stderr
    reader = make_engine(pg_url, read_only=True)
    for sql in ["DELETE FROM runs", "DROP TABLE cka"]:
        with reader.connect() as conn, pytest.raises(sa.exc.DBAPIError, match="read-only transaction"):
            conn.execute(sa.text(sql))
    ok = cli("query", "SELECT count(*) AS n FROM runs", "--db", pg_url, "-f", "csv")
    assert ok.exit_code == 0 and ok.stdout.splitlines() == ["n", "1"]


def fake_run(run_id: str, status: str = "complete") -> dict:
    """The rows of a finished job, without training anything."""
    run = dict(run_id=run_id, name="cifar_resnet[depth=8,width=1]", family="cifar_resnet", params="{}",
               dataset="digits", seed=0, config="{}", status=status, epochs_done=2)
    metrics = [dict(run_id=run_id, name=n, epoch=e, value=float(e)) for n in ("eval_acc", "train_loss") for e in (1, 2)]
    cka = [dict(run_a=run_id, epoch_a=2, layer_a=i, run_b=run_id, epoch_b=2, layer_b=j, pc_removed=False, value=0.5)
           for i in range(3) for j in range(3)]
    return dict(run=run, metrics=metrics, analyses=[AnalysisRows(f"a_{run_id}", "cka", [run_id], {}, {"cka": cka})])


def test_concurrent_writes_of_one_run_neither_fail_nor_duplicate(pg_url):
    """Without the per-run lock, interleaved delete + insert of one run fail with duplicate keys."""
    engine = make_engine(pg_url)
    upgrade(engine)
    errors = []

    def writer():
        try:
            for _ in range(5):
                set_run_status(engine, fake_run("r1")["run"], "running")
                write_run(engine, RunRows(**fake_run("r1")))
        except Exception as exc:  # reported below: an assert in a thread would go unseen
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[0]
    with engine.connect() as conn:
        counts = [conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar() for t in ("runs", "metrics", "analyses", "cka")]
    assert counts == [1, 4, 1, 9]


def test_a_run_is_claimed_by_one_driver_until_it_stores_it_or_goes_away(pg_url):
    from benchsuite.store.writer import RunClaims

    engine = make_engine(pg_url)
    upgrade(engine)
    with RunClaims(engine) as first:
        assert first.take("r1") and first.take("r2")
        with RunClaims(engine) as second:
            assert not second.take("r1")
            first.release("r1")
            assert second.take("r1")
    with RunClaims(engine) as third:  # the first two ended without releasing r1 and r2
        assert third.take("r1") and third.take("r2")
        third.release("r1")
        write_run(engine, RunRows(**fake_run("r1")))
        assert not third.take("r1", ["a_r1"])  # stored complete meanwhile: nothing to do
        assert third.take("r1", ["a_r1", "another_analysis"])  # but an analysis is missing


def test_import_never_replaces_a_complete_run_with_an_unfinished_copy(workdir, cli):
    complete, running = str(workdir / "complete.duckdb"), str(workdir / "running.duckdb")
    for db, status in ((complete, "complete"), (running, "running")):
        engine = make_engine(db)
        upgrade(engine)
        rows = fake_run("r1", status)
        write_run(engine, RunRows(**rows) if status == "complete" else RunRows(run=rows["run"]))
        write_run(engine, RunRows(**fake_run("r2", status)))
    assert cli("db", "export", str(workdir / "running"), "--db", running).exit_code == 0
    before = deterministic(complete)
    assert cli("db", "import", str(workdir / "running"), "--db", complete).exit_code == 0
    assert deterministic(complete) == before
    assert table_rows(complete, tables.runs, {"run_id", "status"}) == [("r1", "complete"), ("r2", "complete")]
    assert cli("db", "export", str(workdir / "complete"), "--db", complete).exit_code == 0
    assert cli("db", "import", str(workdir / "complete"), "--db", running).exit_code == 0
    assert table_rows(running, tables.runs, {"run_id", "status"}) == [("r1", "complete"), ("r2", "complete")]
    assert len(table_rows(running, tables.metrics)) == 8


def test_import_refuses_files_of_another_schema_or_table(workdir, cli):
    db = str(workdir / "a.duckdb")
    upgrade(make_engine(db))
    assert cli("db", "export", str(workdir / "out"), "--db", db).exit_code == 0
    (workdir / "out" / "nonsense.parquet").write_bytes((workdir / "out" / "runs.parquet").read_bytes())
    result = cli("db", "import", str(workdir / "out"), "--db", db)
    assert result.exit_code == 2 and "no table 'nonsense'" in result.stderr
    (workdir / "out" / "nonsense.parquet").unlink()
    old = str(workdir / "old.duckdb")
    upgrade(make_engine(old), "0001")
    result = cli("db", "import", str(workdir / "out"), "--db", old)
    assert result.exit_code == 2 and "bench db upgrade" in result.stderr
    empty = cli("db", "import", str(workdir), "--db", db)
    assert empty.exit_code == 2 and "no .parquet files" in empty.stderr


def bench(*args: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "benchsuite", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_two_drivers_on_overlapping_specs_train_each_run_once(pg_url, workdir):
    """Both start on an empty database; seed 1 is in both specs. No duplicate, no missing row, and
    whichever driver reaches seed 1 second skips it (the other holds it, or has stored it)."""
    (workdir / "a.yaml").write_text(TINY)
    (workdir / "b.yaml").write_text(TINY.replace("seeds: [0, 1]", "seeds: [1, 2]"))
    drivers = [bench("run", spec, "--db", pg_url, cwd=workdir) for spec in ("a.yaml", "b.yaml")]
    outputs = [d.communicate(timeout=300)[0] for d in drivers]
    assert [d.returncode for d in drivers] == [0, 0], outputs
    assert sum(o.count("done cifar_resnet") for o in outputs) == 3, outputs
    assert sum(o.count("skipped cifar_resnet") for o in outputs) == 1, outputs
    engine = make_engine(pg_url)
    with engine.connect() as conn:
        def per_run(sql):
            return dict(conn.execute(sa.text(sql)).all())

        status = per_run("SELECT seed, status FROM runs")
        assert status == {0: "complete", 1: "complete", 2: "complete"}
        for table in ("metrics", "layers", "pcs", "pc_scores"):
            counts = per_run(f"SELECT r.seed, count(*) FROM {table} t JOIN runs r USING (run_id) GROUP BY r.seed")
            assert len(counts) == 3 and len(set(counts.values())) == 1, (table, counts)
        assert conn.execute(sa.text("SELECT count(*), count(DISTINCT analysis_id) FROM analyses WHERE status = 'complete'")).one() == (6, 6)
        cka = per_run("SELECT run_a, count(*) FROM cka GROUP BY run_a")
        assert len(cka) == 3 and len(set(cka.values())) == 1
        assert conn.execute(sa.text("SELECT count(*) FROM specs")).scalar() == 2
