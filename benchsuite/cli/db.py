"""`bench db ...`: schema migrations, moving results between databases."""

from pathlib import Path

import typer

from benchsuite.cli._common import DbOption, console

app = typer.Typer(no_args_is_help=True)


@app.command("upgrade")
def upgrade(db: DbOption = None, revision: str = typer.Argument("head")) -> None:
    """Apply the Alembic migrations (creates the database if needed)."""
    from benchsuite.store.engine import current_revision, make_engine, resolve_url
    from benchsuite.store.engine import upgrade as do_upgrade

    engine = make_engine(db)
    before = current_revision(engine)
    do_upgrade(engine, revision)
    console.print(f"{resolve_url(db)}: schema {before or 'empty'} -> {current_revision(engine)}")


@app.command("current")
def current(db: DbOption = None) -> None:
    """Show the schema revision of the database and the one this benchsuite needs."""
    from benchsuite.store.engine import current_revision, head_revision, make_engine

    console.print(f"database: {current_revision(make_engine(db)) or 'empty'}  benchsuite: {head_revision()}")


@app.command("export")
def export(folder: Path = typer.Argument(help="folder for the files (created if needed)"), db: DbOption = None,
           fmt: str = typer.Option("parquet", "--format", help="parquet: one file per table"),
           exclude: list[str] = typer.Option([], "--exclude", metavar="TABLE",
                                             help="leave this table out, e.g. pc_scores (repeatable)")) -> None:
    """Write every table of the database to FOLDER, one Parquet file per table."""
    from benchsuite.errors import BenchError
    from benchsuite.store.engine import make_engine
    from benchsuite.store.transfer import export_parquet

    if fmt != "parquet":
        raise BenchError(f"--format {fmt!r}: only parquet is supported")
    counts = export_parquet(make_engine(db, read_only=True), folder, exclude)
    console.print(f"{folder}: {sum(counts.values())} rows in {len(counts)} tables")


@app.command("import")
def import_(folder: Path = typer.Argument(help="a folder written by `bench db export`"), db: DbOption = None) -> None:
    """Merge the Parquet files of FOLDER into the database by primary key (creates the database if needed)."""
    from benchsuite.store.engine import open_store, resolve_url
    from benchsuite.store.transfer import import_parquet, read_export

    files = read_export(folder)  # checked before the database is created or touched
    counts = import_parquet(open_store(db, create=True), files)
    console.print(f"{resolve_url(db)}: merged {sum(counts.values())} rows of {len(counts)} tables")
