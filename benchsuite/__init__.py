"""benchsuite: declarative benchmarks for representation similarity."""

__version__ = "0.1.0"


def open(db: str | None = None):  # noqa: A001
    """The results database for notebooks: `.sql()`, `.runs()`, `.heatmap()`, `.claims()`, plots (benchsuite.api)."""
    from benchsuite.api import Results

    return Results(db)
