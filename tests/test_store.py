"""Migrations build exactly the schema of benchsuite.store.tables; old databases are refused."""

import sqlalchemy as sa

from benchsuite.store import tables
from benchsuite.store.engine import check_schema, current_revision, head_revision, make_engine, upgrade


def test_migrations_match_tables_and_check_schema(workdir, cli):
    db = str(workdir / "m.duckdb")
    engine = make_engine(db)
    upgrade(engine, "0001")
    result = cli("query", "SELECT 1", "--db", db)
    assert result.exit_code == 2 and "run `bench db upgrade`" in result.stderr
    assert cli("db", "upgrade", "--db", db).exit_code == 0
    assert current_revision(engine) == head_revision()
    check_schema(engine)
    with engine.connect() as conn:
        for name, table in tables.metadata.tables.items():
            # information_schema, not sa.inspect: duckdb_engine's reflection needs pg_catalog tables DuckDB lacks
            columns = conn.execute(sa.text("SELECT column_name FROM information_schema.columns WHERE table_name = :t"),
                                   {"t": name}).scalars()
            assert set(columns) == {c.name for c in table.columns}, name
            keys = conn.execute(sa.text(
                "SELECT k.column_name FROM information_schema.key_column_usage k JOIN information_schema.table_constraints c "
                "ON k.constraint_name = c.constraint_name AND k.table_name = c.table_name "
                "WHERE c.constraint_type = 'PRIMARY KEY' AND k.table_name = :t"), {"t": name}).scalars()
            assert set(keys) == {c.name for c in table.primary_key}, name


def test_values_are_stored_in_double_precision(workdir):
    """DuckDB's FLOAT is 32-bit: every value column must be DOUBLE so 1/3 comes back exactly."""
    from benchsuite.store.engine import open_store
    from benchsuite.store.writer import RunRows, write_run

    engine = open_store(str(workdir / "d.duckdb"), create=True)
    run = dict(run_id="r", name="n", family="f", params="{}", dataset="d", seed=0, config="{}", status="complete",
               train_seconds=1 / 3)
    write_run(engine, RunRows(run=run, metrics=[dict(run_id="r", name="eval_acc", epoch=1, value=1 / 3)]))
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT value FROM metrics")).scalar() == 1 / 3
        assert conn.execute(sa.text("SELECT train_seconds FROM runs")).scalar() == 1 / 3
