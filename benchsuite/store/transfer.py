"""Move results between databases (DuckDB files, PostgreSQL): `export_parquet` writes one Parquet file per
table, `import_parquet` merges such a folder into a database by primary key. Importing a folder twice, or
overlapping folders from several machines, never duplicates a row: a row whose key the database holds
replaces it, except that a complete run or analysis is never replaced by an unfinished copy."""

from __future__ import annotations

import os
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Engine

from benchsuite.errors import BenchError
from benchsuite.store import tables as t
from benchsuite.store.engine import advisory_lock, check_schema, current_revision

REVISION_KEY = b"benchsuite.schema"  # Parquet metadata: the schema revision the file was exported at
BATCH = 50_000  # rows per Parquet row group, and per insert


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise BenchError("Parquet export and import need pyarrow: pip install 'benchsuite[parquet]'") from None
    return pa, pq


def _arrow_schema(pa, table: sa.Table, revision: str):
    def arrow_type(column: sa.Column):
        kind = column.type
        if isinstance(kind, sa.Boolean):
            return pa.bool_()
        if isinstance(kind, sa.Integer):
            return pa.int64()
        if isinstance(kind, sa.Float):
            return pa.float64()
        if isinstance(kind, sa.DateTime):
            return pa.timestamp("us", tz="UTC")
        if isinstance(kind, sa.String):
            return pa.string()
        raise TypeError(f"{table.name}.{column.name}: no Parquet type for {kind!r}")

    fields = [pa.field(c.name, arrow_type(c), nullable=c.nullable and not c.primary_key) for c in table.columns]
    return pa.schema(fields, metadata={REVISION_KEY: revision.encode()})


def export_parquet(engine: Engine, folder: Path, exclude=()) -> dict[str, int]:
    """Write every table but `exclude` to folder/<table>.parquet, rows in key order; returns rows per table.
    A table left out is absent from the folder (no stale file of an earlier export stays)."""
    pa, pq = _pyarrow()
    unknown = sorted(set(exclude) - set(t.metadata.tables))
    if unknown:
        raise BenchError(f"--exclude {', '.join(unknown)}: no such table; tables: {', '.join(sorted(t.metadata.tables))}")
    check_schema(engine)
    revision = current_revision(engine)
    folder.mkdir(parents=True, exist_ok=True)
    counts = {}
    with engine.connect() as conn:
        for table in t.metadata.sorted_tables:
            path = folder / f"{table.name}.parquet"
            if table.name in exclude:
                path.unlink(missing_ok=True)
                continue
            schema = _arrow_schema(pa, table, revision)
            tmp = path.with_name(path.name + ".tmp")
            counts[table.name] = 0
            result = conn.execute(sa.select(table).order_by(*table.primary_key.columns))
            with pq.ParquetWriter(tmp, schema) as writer:
                for rows in result.mappings().partitions(BATCH):
                    writer.write_batch(pa.RecordBatch.from_pylist(rows, schema=schema))
                    counts[table.name] += len(rows)
            os.replace(tmp, path)  # a reader never finds half a file
    return counts


def read_export(folder: Path) -> dict:
    """The Parquet files of an export, opened and checked (readable, known tables and columns, this code's
    schema revision) before any database is touched; table name -> ParquetFile."""
    pa, pq = _pyarrow()
    from benchsuite.store.engine import head_revision

    if not folder.is_dir():
        raise BenchError(f"{folder}: no such folder (write one with `bench db export`)")
    head = head_revision()
    files = {}
    for path in sorted(folder.glob("*.parquet")):
        if path.stem not in t.metadata.tables:
            raise BenchError(f"{path}: no table {path.stem!r} in the results schema")
        try:
            files[path.stem] = file = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as exc:
            raise BenchError(f"{path}: not a readable Parquet file ({_first_line(exc)}); export it again") from None
        revision = (file.schema_arrow.metadata or {}).get(REVISION_KEY, b"").decode() or "unknown"
        if revision != head:
            raise BenchError(f"{path} was exported at schema {revision}, this database is at {head}; "
                             "`bench db upgrade` the older database and export again")
        columns = [c.name for c in t.metadata.tables[path.stem].columns]
        if file.schema_arrow.names != columns:
            raise BenchError(f"{path}: columns {', '.join(file.schema_arrow.names)} are not those of table "
                             f"{path.stem} ({', '.join(columns)}); export it again")
    if not files:
        raise BenchError(f"{folder}: no .parquet files to import (write them with `bench db export`)")
    return files


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def import_parquet(engine: Engine, files: dict) -> dict[str, int]:
    """Merge the files of `read_export` into the database, all in one transaction (a file that turns out
    corrupt part way leaves the database as it was); returns rows read per table."""
    pa, _ = _pyarrow()
    check_schema(engine)
    counts = {}
    try:
        with engine.begin() as conn:
            # Drivers writing these runs and analyses meanwhile wait for the import, and the other way round.
            # Every run lock before any analysis lock, as a driver's write takes them.
            for table, key, kind in ((t.runs, "run_id", "run"), (t.analyses, "analysis_id", "analysis")):
                if table.name in files:
                    for value in sorted(files[table.name].read(columns=[key]).column(key).to_pylist()):
                        advisory_lock(conn, kind, value)
            for name, file in files.items():
                counts[name] = _merge(conn, t.metadata.tables[name], file)
    except (pa.ArrowException, OSError) as exc:
        raise BenchError(f"{name}.parquet: cannot be read ({_first_line(exc)}); nothing was imported, "
                         "export it again") from None
    return counts


def _merge(conn: Connection, table: sa.Table, file) -> int:
    """Load the file into a temporary table, then upsert it by primary key in one statement (row-by-row
    upserts are a hundred times slower on DuckDB)."""
    stage = sa.Table(f"import_{table.name}", sa.MetaData(), *(sa.Column(c.name, c.type) for c in table.columns),
                     prefixes=["TEMPORARY"])
    stage.create(conn)
    n = 0
    for batch in file.iter_batches(batch_size=BATCH):
        if batch.num_rows:  # an empty parameter list would insert one row of nulls
            conn.execute(stage.insert(), batch.to_pylist())
            n += batch.num_rows
    names = [c.name for c in table.columns]
    insert = postgresql.insert(table).from_select(names, sa.select(*(stage.c[c] for c in names)))
    keys = list(table.primary_key.columns)
    update = {c.name: insert.excluded[c.name] for c in table.columns if not c.primary_key}
    if not update:
        insert = insert.on_conflict_do_nothing(index_elements=keys)
    else:
        keep_complete = (sa.or_(table.c.status != "complete", insert.excluded.status == "complete")
                         if "status" in table.c else None)
        insert = insert.on_conflict_do_update(index_elements=keys, set_=update, where=keep_complete)
    conn.execute(insert)
    stage.drop(conn)
    return n
