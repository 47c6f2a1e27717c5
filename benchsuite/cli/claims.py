"""`bench claims`: evaluate the paper's claims over the results database."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from benchsuite.cli._common import DbOption, FormatOption, err_console, print_rows


def register(app: typer.Typer) -> None:
    @app.command("claims")
    def claims(
        db: DbOption = None,
        spec: Annotated[list[str] | None, typer.Option("--spec", help="only runs of these spec names (repeatable)")] = None,
        write: Annotated[Path | None, typer.Option(help="write the Markdown report here (figures beside it)")] = None,
        fmt: FormatOption = "table",
    ) -> None:
        """Evaluate claims C1-C8 of Nguyen et al. (2021) from stored results; store and print the verdicts."""
        from benchsuite.report.reproduction import render, store_claims
        from benchsuite.store.engine import open_store

        engine = open_store(db)
        figures = write.parent / "figures" if write else None
        text, results = render(engine, spec, figures)
        store_claims(engine, ",".join(sorted(spec)) if spec else "all", results)
        if write:
            write.parent.mkdir(parents=True, exist_ok=True)
            write.write_text(text)
            err_console.print(f"wrote {write}")
        print_rows(["claim", "verdict", "statistic", "uncertainty", "title"],
                   [(c.claim, c.verdict, c.statistic, c.uncertainty, c.title) for c in results], fmt=fmt, title="claims")
