"""Executors run jobs; the driver writes each result as it arrives (one writer per database)."""

from __future__ import annotations

from typing import Callable, Iterator, Protocol

from rich.markup import escape
from sqlalchemy.engine import Engine

from benchsuite.runner.jobs import Job, describe_error, run_job, run_row
from benchsuite.runner.progress import Reporter
from benchsuite.store.writer import RunRows, set_run_status, write_run


class Executor(Protocol):
    def submit(self, jobs: list[Job], reporter: Reporter | None) -> Iterator[tuple[Job, RunRows | BaseException]]:
        """Yield each job with its rows, or the exception that made it fail."""


class LocalExecutor:
    """One process, one device, jobs in order."""

    def __init__(self, on_start: Callable[[Job], None] | None = None):
        self.on_start = on_start

    def submit(self, jobs, reporter):
        for job in jobs:
            if self.on_start:
                self.on_start(job)
            if reporter:
                reporter.start_run(job.name, job.config.seed, job.config.train.epochs)
            try:
                yield job, run_job(job, on_step=reporter.step if reporter else None)
            except Exception as exc:  # a failed run never blocks the sweep
                yield job, exc


def execute(jobs: list[Job], engine: Engine, executor: Executor | None = None,
            reporter: Reporter | None = None) -> dict[str, int]:
    """Run `jobs` and store every result; returns counts of complete and failed runs."""
    executor = executor or LocalExecutor(on_start=lambda job: set_run_status(engine, run_row(job), "running"))
    counts = {"complete": 0, "failed": 0}
    for job, outcome in executor.submit(jobs, reporter):
        if isinstance(outcome, BaseException):
            error = describe_error(outcome)
            set_run_status(engine, run_row(job), "failed", error)
            counts["failed"] += 1
            message = f"[red]failed[/] {escape(job.name)} seed={job.config.seed}: {escape(error)}"
        else:
            write_run(engine, outcome)
            counts["complete"] += 1
            acc = [m["value"] for m in outcome.metrics if m["name"] == "eval_acc"]
            message = f"[green]done[/] {escape(job.name)} seed={job.config.seed}" + (f"  eval_acc={acc[-1]:.3f}" if acc else "")
            if outcome.resumed_from:
                message += f"  (resumed from epoch {outcome.resumed_from})"
        if reporter:
            reporter.end_run(message)
    return counts
