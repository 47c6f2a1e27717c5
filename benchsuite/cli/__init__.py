"""The `bench` command: a thin Typer layer over the library. Heavy imports stay inside commands."""

from __future__ import annotations

import errno

import typer
import typer.core

from benchsuite.errors import BenchError


class _Group(typer.core.TyperGroup):
    """Turns a BenchError anywhere below into one red line on stderr and exit code 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BenchError as exc:
            _error(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except OSError as exc:  # a path given that cannot be read or written: the system's reason is the message
            _error(f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc))
            raise typer.Exit(1 if exc.errno in (errno.ENOSPC, errno.EDQUOT) else 2) from None


def _error(message: str) -> None:
    from rich.markup import escape

    from benchsuite.cli._common import err_console

    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)


app = typer.Typer(cls=_Group, no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
                  help="benchsuite: declarative benchmarks for representation similarity.")


def _register() -> None:
    from benchsuite.cli import claims, compare, data, db, families, leaderboard, query, run, spec

    run.register(app)
    query.register(app)
    claims.register(app)
    compare.register(app)
    families.register(app)
    app.add_typer(spec.app, name="spec", help="The spec language.")
    app.add_typer(db.app, name="db", help="The results database.")
    app.add_typer(leaderboard.app, name="leaderboard", help="The static leaderboard site.")
    app.add_typer(data.app, name="data", help="Datasets: where they are, fetching them.")


_register()


def main() -> None:
    app()
