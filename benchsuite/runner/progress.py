"""Rich progress: one bar over the runs of a sweep, one over the steps of every run in progress; and the
progress other processes see, each finished epoch written to the database by the driver."""

from __future__ import annotations

import sqlalchemy as sa
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class Reporter:
    """Executors call `start_run`, `step` and `stop_run` for each unit of work in progress (one run, or
    seeds trained together), keyed by its first run id, and `epoch_done` for each run; the driver calls
    `end_run` once per run."""

    def __init__(self, total_runs: int, console: Console | None = None, engine: sa.engine.Engine | None = None):
        self.console = console or Console(stderr=True)
        self.engine = engine  # where epoch_done records progress (None: the bars only)
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TimeRemainingColumn(), console=self.console, transient=False)
        self.runs = self.progress.add_task("runs", total=total_runs)
        self.active: dict[str, tuple[int, str, int]] = {}  # key -> (task, description, epochs)

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def start_run(self, key: str, label: str, epochs: int) -> None:
        self.stop_run(key)
        desc = f"  {escape(label)}"
        self.active[key] = (self.progress.add_task(desc, total=None), desc, epochs)

    def step(self, key: str, epoch: int, batch: int, batches: int) -> None:
        task, desc, epochs = self.active[key]
        self.progress.update(task, total=epochs * batches, completed=epoch * batches + batch,
                             description=f"{desc} epoch {epoch + 1}/{epochs}")

    def stop_run(self, key: str) -> None:
        if key in self.active:
            self.progress.remove_task(self.active.pop(key)[0])

    def end_run(self, message: str) -> None:
        self.progress.advance(self.runs)
        self.progress.console.print(message)

    def epoch_done(self, run_id: str, epochs_done: int, metrics: list[dict]) -> None:
        """Called on the driver after every finished epoch of a run, whichever process trained it: `metrics`
        are that epoch's {name, value} rows. Progress is a courtesy to readers, so a failed write only warns."""
        if self.engine is None:
            return
        from benchsuite.store.writer import record_progress

        try:
            record_progress(self.engine, run_id, epochs_done, metrics)
        except sa.exc.DBAPIError as exc:
            self.progress.console.print(f"[yellow]progress of epoch {epochs_done} not stored[/]: "
                                        f"{escape(str(exc.orig).splitlines()[0])}")
