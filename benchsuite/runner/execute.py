"""Executors run jobs; the driver writes each result as it arrives (one writer per database)."""

from __future__ import annotations

from contextlib import closing
from typing import Iterable, Iterator, Protocol

from rich.markup import escape
from sqlalchemy.engine import Engine

from benchsuite.errors import DiskFullError
from benchsuite.runner.jobs import Job, describe_error, run_row, run_unit, unit_label
from benchsuite.runner.plan import stack_units
from benchsuite.runner.progress import Reporter
from benchsuite.store.writer import RunClaims, RunRows, set_run_status, write_run


class Executor(Protocol):
    def submit(self, units: Iterable[list[Job]], reporter: Reporter | None) -> Iterator[tuple[Job, RunRows | BaseException]]:
        """Yield each job of each unit (a run, or seeds trained together) with its rows, or the exception that
        made it fail. Take each unit from `units` only when about to start it (the driver claims and marks its
        jobs then); cancel what is left when closed."""


def run_reported(unit: list[Job], reporter: Reporter | None) -> list[RunRows | BaseException]:
    """`run_unit` with a progress bar for the unit while it runs."""
    key = unit[0].run_id
    if reporter:
        reporter.start_run(key, unit_label(unit), unit[0].config.train.epochs)
    try:
        return run_unit(unit, reporter)
    finally:
        if reporter:
            reporter.stop_run(key)


class LocalExecutor:
    """This process, one device, units in order."""

    def submit(self, units, reporter):
        for unit in units:
            yield from zip(unit, run_reported(unit, reporter))


def _claimed(units: list[list[Job]], engine: Engine, claims: RunClaims, counts: dict[str, int],
             reporter: Reporter | None) -> Iterator[list[Job]]:
    """The units this driver may start, each job marked running; jobs another driver holds or finished are skipped."""
    for unit in units:
        mine = []
        for job in unit:
            if claims.take(job.run_id, [a.analysis_id for a in job.analyses]):
                set_run_status(engine, run_row(job), "running")
                mine.append(job)
                continue
            counts["skipped"] += 1
            if reporter:
                reporter.end_run(f"[yellow]skipped[/] {escape(job.name)} seed={job.config.seed}: another driver runs or ran it")
        if mine:
            yield mine


def execute(jobs: list[Job], engine: Engine, executor: Executor | None = None,
            reporter: Reporter | None = None) -> dict[str, int]:
    """Run `jobs` and store every result; returns counts of complete, failed and skipped runs."""
    executor = executor or LocalExecutor()
    counts = {"complete": 0, "failed": 0, "skipped": 0}
    units = stack_units(jobs)
    # closing(): on Ctrl-C or any error here, the executor cancels the jobs still outstanding
    with RunClaims(engine) as claims, \
            closing(executor.submit(_claimed(units, engine, claims, counts, reporter), reporter)) as outcomes:
        for job, outcome in outcomes:
            if isinstance(outcome, DiskFullError):
                raise outcome  # every later write would fail too; the run stays resumable (running)
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
                message += "".join(f"\n[yellow]note[/] {escape(job.name)} seed={job.config.seed}: {escape(n)}"
                                   for n in outcome.notes)
            claims.release(job.run_id)
            if reporter:
                reporter.end_run(message)
    return counts
