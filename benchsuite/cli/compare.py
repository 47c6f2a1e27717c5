"""`bench compare A B`: did a code change, or a rerun, alter the results?"""

from typing import Annotated

import typer

from benchsuite.cli._common import FormatOption, console, print_rows

TolOption = lambda what: Annotated[float, typer.Option(min=0.0, help=f"largest |A - B| of {what} that counts as equal")]  # noqa: E731


def register(app: typer.Typer) -> None:
    @app.command("compare")
    def compare(
        a: Annotated[str, typer.Argument(help="database (path or URL) or `bench db export` folder", show_default=False)],
        b: Annotated[str, typer.Argument(help="the other database or export folder", show_default=False)],
        accuracy_tol: TolOption("final eval accuracy") = 1e-6,
        cka_tol: TolOption("a CKA cell") = 1e-6,
        pc1_tol: TolOption("a PC1 variance fraction") = 1e-6,
        block_tol: TolOption("a block score") = 1e-6,
        fmt: FormatOption = "table",
    ) -> None:
        """Compare two result sets run by run on their shared run ids; exit 1 when a difference exceeds its tolerance."""
        from benchsuite.report.compare import Tolerances, compare as run_compare

        result = run_compare(a, b, Tolerances(accuracy_tol, cka_tol, pc1_tol, block_tol))
        columns = ["run", "seed", "quantity", "A", "B", "max_abs_diff", "mean_abs_diff", "tolerance", "where", "ok"]
        print_rows(columns, [(r.run, r.seed, r.quantity, r.a, r.b, r.max_diff, r.mean_diff, r.tolerance, r.where,
                              "ok" if r.ok else "DIFFERS") for r in result.rows], fmt=fmt, title=f"A: {a}  B: {b}")
        for side, runs in (("A", result.only_a), ("B", result.only_b)):
            if runs:
                print_rows(["run", "seed", "status", "run_id"], runs, fmt=fmt, title=f"only in {side}")
        bad = sum(not r.ok for r in result.rows)
        if fmt == "table":
            console.print(f"{len(result.rows) - bad} of {len(result.rows)} comparisons within tolerance"
                          + (f", {len(result.only_a)} runs only in A, {len(result.only_b)} only in B"
                             if result.only_a or result.only_b else ""))
        if bad:
            raise typer.Exit(1)
