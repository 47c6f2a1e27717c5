"""The `bench` command: a thin Typer layer over the library. Heavy imports stay inside commands."""

from __future__ import annotations

import typer
import typer.core

from benchsuite.errors import BenchError


class _Group(typer.core.TyperGroup):
    """Turns a BenchError anywhere below into one red line on stderr and exit code 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BenchError as exc:
            from benchsuite.cli._common import err_console

            from rich.markup import escape

            err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
            raise typer.Exit(exc.exit_code) from None


app = typer.Typer(cls=_Group, no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
                  help="benchsuite: declarative benchmarks for representation similarity.")


def _register() -> None:
    from benchsuite.cli import claims, data, db, families, leaderboard, query, run, spec

    run.register(app)
    query.register(app)
    claims.register(app)
    families.register(app)
    app.add_typer(spec.app, name="spec", help="The spec language.")
    app.add_typer(db.app, name="db", help="The results database.")
    app.add_typer(leaderboard.app, name="leaderboard", help="The static leaderboard site.")
    app.add_typer(data.app, name="data", help="Datasets: where they are, fetching them.")


_register()


def main() -> None:
    app()
