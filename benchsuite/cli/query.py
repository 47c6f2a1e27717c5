"""`bench query SQL` and `bench runs`: read the results database."""

from typing import Annotated

import typer

from benchsuite.cli._common import DbOption, FormatOption, err_console, print_rows

TERMINAL_FORMATS = ("table", "markdown")  # read by a person: capped; csv and json print every row


def register(app: typer.Typer) -> None:
    @app.command("query")
    def query(sql: Annotated[str, typer.Argument(help="one SELECT statement")], db: DbOption = None,
              fmt: FormatOption = "table",
              timeout: Annotated[float, typer.Option(min=0.001, help="stop the query after SECONDS")] = 300.0,
              max_rows: Annotated[int, typer.Option(min=1, help="rows shown by table and markdown (csv, json: all)")] = 1000,
              ) -> None:
        """Run one read-only SQL query against the results database."""
        from benchsuite.store.query import run_query

        cap = max_rows if fmt in TERMINAL_FORMATS else None
        columns, rows = run_query(sql, db, timeout=timeout, max_rows=cap)
        print_rows(columns, rows[:cap], fmt=fmt)
        if cap is not None and len(rows) > cap:
            err_console.print(f"[yellow]first {cap} rows shown[/]: add a LIMIT, raise --max-rows, or use --format csv for all")

    @app.command("runs")
    def runs(db: DbOption = None, fmt: FormatOption = "table") -> None:
        """Status of every run in the database."""
        from benchsuite.store.query import run_query

        # round(x * 10) / 10: PostgreSQL has no round(double precision, int)
        sql = ("SELECT r.name, r.seed, r.dataset, r.status, r.epochs_done AS epochs, "
               "(SELECT m.value FROM metrics m WHERE m.run_id = r.run_id AND m.name = 'eval_acc' "
               " ORDER BY m.epoch DESC LIMIT 1) AS eval_acc, round(r.train_seconds * 10) / 10 AS train_s, r.run_id, r.error "
               "FROM runs r ORDER BY r.family, r.name, r.seed")
        print_rows(*run_query(sql, db), fmt=fmt, title="runs")
