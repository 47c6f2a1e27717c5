"""Results for notebooks: `benchsuite.open(db)` reads the results database, read-only, into pandas
objects and draws the leaderboard's own figures (matplotlib Figures) from it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from benchsuite.errors import BenchError

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from benchsuite.site.data import Run, SiteData


def _pandas():
    try:
        import pandas
    except ImportError:
        raise BenchError("benchsuite.open() needs pandas: pip install 'benchsuite[notebook]'") from None
    return pandas


class Results:
    """A results database (path or SQLAlchemy URL; default BENCH_DB, else bench.duckdb), read-only."""

    def __init__(self, db: str | None = None):
        self.db = db
        self._data: SiteData | None = None

    def sql(self, query: str) -> pd.DataFrame:
        """One read-only query, as `bench query` runs it, as a DataFrame."""
        from benchsuite.store.query import run_query

        columns, rows = run_query(query, self.db)
        return _pandas().DataFrame(rows, columns=columns)

    def runs(self) -> pd.DataFrame:
        """What `bench runs` shows: every run's status, epochs, latest eval accuracy and id."""
        from benchsuite.store.query import RUNS_SQL

        return self.sql(RUNS_SQL)

    def claims(self) -> pd.DataFrame:
        """The verdicts `bench claims` stored, one row per scope and claim."""
        return self.sql("SELECT scope, claim, title, statistic, uncertainty, verdict, note FROM claims ORDER BY scope, claim")

    @property
    def data(self) -> SiteData:
        """Everything the leaderboard shows, read once (call `refresh()` after new runs)."""
        if self._data is None:
            from benchsuite.site.data import load_site_data

            self._data = load_site_data(self.db)
        return self._data

    def refresh(self) -> None:
        self._data = None

    def run(self, run: str, seed: int | None = None) -> Run:
        """A run by run_id, or by name (`cifar_resnet[depth=8,width=1]`) and seed (needed when it has several)."""
        found = [r for r in self.data.runs if r.run_id == run or (r.name == run and seed in (None, r.seed))]
        if len(found) == 1:
            return found[0]
        if not found:
            raise BenchError(f"no run {run!r}{f' with seed {seed}' if seed is not None else ''} in the database")
        raise BenchError(f"{run!r} has seeds {', '.join(str(r.seed) for r in found)}; pass seed=")

    def heatmap(self, run: str, seed: int | None = None, pc_removed: bool = False) -> pd.DataFrame:
        """A run's within-model CKA heatmap (after removing each layer's PC1 with `pc_removed`), as a
        DataFrame whose index and columns are its probe points."""
        r = self.run(run, seed)
        values = r.cka_pc_removed if pc_removed else r.cka
        if values is None:
            raise BenchError(f"{r.name} seed {r.seed} has no {'PC1-removed ' if pc_removed else ''}CKA heatmap; "
                             "add `cka` (or `pcs`) to the spec's analyses")
        names = [layer.name for layer in r.layers] if len(r.layers) == len(values) else list(range(len(values)))
        frame = _pandas().DataFrame(values, index=names, columns=names)
        frame.index.name, frame.columns.name = "layer_a", "layer_b"
        return frame

    def plot_heatmap(self, run: str, seed: int | None = None) -> Figure:
        """The run's CKA heatmap as its leaderboard page draws it, detected blocks outlined."""
        from benchsuite.site import figures
        from benchsuite.site.build import cka_figure

        r = self.run(run, seed)
        self.heatmap(run, seed)  # the same error when there is none
        return figures.figure(figures.heatmap, **cka_figure(r)[1])

    def plot_pc1(self, name: str) -> Figure:
        """PC1 variance fraction by layer for every seed of an architecture, and their mean, as on its page."""
        from benchsuite.site import figures
        from benchsuite.site.build import PC1_LINES, layer_labels

        have = [r for r in self.data.runs if r.name == name and r.complete and r.pc1 is not None]
        if not have:
            raise BenchError(f"no complete run named {name!r} with PC1 fractions; add `pcs` to the spec's analyses")
        return figures.figure(figures.layer_lines, series=[[f"seed {r.seed}", r.pc1] for r in have],
                              layers=layer_labels(have[0]), **PC1_LINES)

