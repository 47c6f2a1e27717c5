"""Options and output shared by every command."""

from __future__ import annotations

import csv
import io
import json
from typing import Annotated, Any, Sequence

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

console = Console()
err_console = Console(stderr=True, soft_wrap=True)

DbOption = Annotated[str | None, typer.Option("--db", help="database file or SQLAlchemy URL [env: BENCH_DB; default: bench.duckdb]")]
DataDirOption = Annotated[str | None, typer.Option("--data-dir", help="dataset folder [env: BENCH_DATA; default: user cache]")]
FormatOption = Annotated[str, typer.Option("--format", "-f", help="table, csv, json or markdown")]


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return "" if v is None else str(v)


def rows_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> Table:
    table = Table(title=title)
    for c in columns:
        table.add_column(c, overflow="fold")
    for r in rows:
        table.add_row(*(Text(_cell(v)) for v in r))  # Text: cell values are never markup
    return table


def print_rows(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str = "table", title: str | None = None) -> None:
    """Print a result set as a Rich table, CSV, JSON records or a Markdown table."""
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
        typer.echo(buf.getvalue(), nl=False)
    elif fmt == "json":
        typer.echo(json.dumps([dict(zip(columns, r)) for r in rows], default=str, indent=1))
    elif fmt == "markdown":
        typer.echo("| " + " | ".join(columns) + " |")
        typer.echo("|" + "---|" * len(columns))
        for r in rows:
            typer.echo("| " + " | ".join(_cell(v).replace("|", "\\|") for v in r) + " |")
    elif fmt == "table":
        console.print(rows_table(columns, rows, title))
    else:
        from benchsuite.errors import BenchError

        raise BenchError(f"--format {fmt!r} is not one of table, csv, json, markdown")
