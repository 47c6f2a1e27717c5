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
    def runs(db: DbOption = None, fmt: FormatOption = "table",
             watch: Annotated[bool, typer.Option("--watch", help="refresh the table until no run is running")] = False,
             interval: Annotated[float, typer.Option(min=0.1, help="--watch: seconds between refreshes")] = 2.0) -> None:
        """Status of every run in the database: its epoch while it trains, its accuracy so far."""
        from benchsuite.store.query import RUNS_SQL, run_query

        if not watch:
            print_rows(*run_query(RUNS_SQL, db), fmt=fmt, title="runs")
            return
        _watch(db, interval)


IDLE_SECONDS = 5.0  # a driver marks its next run running only as it starts it: a short gap is not the end


def _watch(db: str | None, interval: float) -> None:
    """A live table of `bench runs`, until no run has been running for IDLE_SECONDS (or Ctrl-C)."""
    import time

    from rich.live import Live

    from benchsuite.cli._common import console, rows_table
    from benchsuite.store.query import RUNS_SQL, run_query

    idle_since = None
    with Live(console=console, auto_refresh=False) as live:
        try:
            while idle_since is None or time.monotonic() - idle_since < IDLE_SECONDS:
                columns, rows = run_query(RUNS_SQL, db)
                running = sum(r[3] == "running" for r in rows)
                live.update(rows_table(columns, rows, title=f"runs: {running} running, {time.strftime('%H:%M:%S')}"),
                            refresh=True)
                idle_since = None if running else (idle_since or time.monotonic())
                time.sleep(interval)
        except KeyboardInterrupt:
            pass
