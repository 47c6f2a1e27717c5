"""Executors run jobs; the driver writes each result as it arrives (one writer per database)."""

from __future__ import annotations

from contextlib import closing
from typing import Iterable, Iterator, Protocol

from rich.markup import escape
from sqlalchemy.engine import Engine

from benchsuite.errors import DiskFullError
from benchsuite.runner.jobs import Job, describe_error, run_job, run_row
from benchsuite.runner.progress import Reporter
from benchsuite.store.writer import RunClaims, RunRows, set_run_status, write_run


class Executor(Protocol):
    def submit(self, jobs: Iterable[Job], reporter: Reporter | None) -> Iterator[tuple[Job, RunRows | BaseException]]:
        """Yield each job with its rows, or the exception that made it fail. Take each job from `jobs` only
        when about to start it (the driver claims and marks it then); cancel what is left when closed."""


class LocalExecutor:
    """One process, one device, jobs in order."""

    def submit(self, jobs, reporter):
        for job in jobs:
            if reporter:
                reporter.start_run(job.name, job.config.seed, job.config.train.epochs)
            on_epoch = (lambda e, m, run_id=job.run_id: reporter.epoch_done(run_id, e, m)) if reporter else None
            try:
                yield job, run_job(job, on_step=reporter.step if reporter else None, on_epoch=on_epoch)
            except Exception as exc:  # a failed run never blocks the sweep
                yield job, exc


def _claimed(jobs: list[Job], engine: Engine, claims: RunClaims, counts: dict[str, int],
             reporter: Reporter | None) -> Iterator[Job]:
    """The jobs this driver may start, each marked running; those another driver holds or finished are skipped."""
    for job in jobs:
        if claims.take(job.run_id, [a.analysis_id for a in job.analyses]):
            set_run_status(engine, run_row(job), "running")
            yield job
            continue
        counts["skipped"] += 1
        if reporter:
            reporter.end_run(f"[yellow]skipped[/] {escape(job.name)} seed={job.config.seed}: another driver runs or ran it")


def execute(jobs: list[Job], engine: Engine, executor: Executor | None = None,
            reporter: Reporter | None = None) -> dict[str, int]:
    """Run `jobs` and store every result; returns counts of complete, failed and skipped runs."""
    executor = executor or LocalExecutor()
    counts = {"complete": 0, "failed": 0, "skipped": 0}
    # closing(): on Ctrl-C or any error here, the executor cancels the jobs still outstanding
    with RunClaims(engine) as claims, \
            closing(executor.submit(_claimed(jobs, engine, claims, counts, reporter), reporter)) as outcomes:
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
