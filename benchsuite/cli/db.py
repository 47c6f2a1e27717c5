"""`bench db ...`: schema migrations."""

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
