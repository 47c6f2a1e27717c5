"""A job trains and measures one run and returns its rows; it never touches the database,
so any executor (in-process, Ray worker) can run it and hand the rows to the single writer."""

from __future__ import annotations

import json
import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

import benchsuite
from benchsuite.errors import BenchError, DiskFullError, RunFailed
from benchsuite.heap import keep_freed_memory
from benchsuite.models import create_model, probe_points
from benchsuite.runner.analyses import _RUN_ANALYSES, RunContext, check_finite, measure_id
from benchsuite.spec.load import canonical_json
from benchsuite.spec.schema import MeasureSpec, RunConfig
from benchsuite.store.writer import AnalysisRows, RunRows
from benchsuite.train import TrainResult, prepare_data, select_device, train
from benchsuite.train.loop import train_runs


@dataclass
class PlannedAnalysis:
    analysis_id: str
    kind: str
    options: dict


@dataclass
class Job:
    run_id: str
    name: str
    config: RunConfig
    measure: MeasureSpec
    analyses: list[PlannedAnalysis]
    spec_hash: str
    artifacts: str  # folder for checkpoints
    data_dir: str | None = None
    device: str = "auto"
    status: str = "new"  # new, running (resumable), failed, complete (analyses missing)
    keep_epochs: list[int] = field(default_factory=list)  # epochs whose model state is kept (training_cka)
    extra: dict = field(default_factory=dict)

    @property
    def checkpoint(self) -> Path:
        return Path(self.artifacts) / "runs" / self.run_id / "last.pt"

    @property
    def measure_id(self) -> str:
        return measure_id(self.measure.identity())

    def epoch_checkpoint(self, epoch: int) -> Path:
        return self.checkpoint.with_name(f"epoch_{epoch}.pt")


def versions() -> dict[str, str]:
    return {"benchsuite": benchsuite.__version__, "torch": torch.__version__, "python": platform.python_version()}


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(benchsuite.__file__).parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def run_row(job: Job, **extra) -> dict:
    c = job.config
    size = c.dataset.train_size
    return dict(run_id=job.run_id, name=job.name, family=c.family, params=json.dumps(c.params, sort_keys=True),
                dataset=c.dataset.name, train_size=None if size is None else float(size), subset_seed=c.dataset.subset_seed,
                seed=c.seed, config=canonical_json(c), spec_hash=job.spec_hash, **extra)


def build_model(job: Job, data, stack: int = 1) -> torch.nn.Module:
    torch.manual_seed(job.config.seed)
    model = create_model(job.config.family, num_classes=data.num_classes, in_chans=data.in_chans,
                         image_size=data.image_size, stack=stack, **job.config.params)
    if job.config.train.zero_init_residual:
        model.zero_init_residual()
    return model


def _start(job: Job):
    """The device and data of a job, and its checkpoint folder."""
    job.checkpoint.parent.mkdir(parents=True, exist_ok=True)
    return select_device(job.device), prepare_data(job.config.dataset, job.data_dir, eval_batch_size=job.measure.batch_size)


def run_job(job: Job, on_step: Callable[[int, int, int], None] | None = None,
            on_epoch: Callable[[int, list[dict]], None] | None = None) -> RunRows:
    """Train (or resume) one run, then compute its per-run analyses. Raises on failure.
    `on_step` and `on_epoch` are the training loop's progress callbacks."""
    device, data = _start(job)
    model = build_model(job, data)
    result = train(job.config, data, model, device=device, checkpoint=job.checkpoint, on_step=on_step,
                   on_epoch=on_epoch, keep_epochs=job.keep_epochs)
    return measure_run(job, data, model, result, device)


def measure_run(job: Job, data, model: torch.nn.Module, result: TrainResult, device: torch.device,
                stacked: int = 1) -> RunRows:
    """A trained run's per-run analyses and its rows."""
    start = time.perf_counter()
    points = probe_points(model, job.measure.probes)
    ctx = RunContext(job.run_id, model, data, points, device, epoch=result.epochs_done,
                     similarity=job.measure.similarity, similarity_examples=job.measure.similarity_examples,
                     examples=job.measure.examples)
    analyses = [AnalysisRows(a.analysis_id, a.kind, [job.run_id], a.options, rows=_RUN_ANALYSES[a.kind](ctx, a.options),
                             measure_id=job.measure_id) for a in job.analyses]
    check_finite({"metrics": result.metrics}, f"{job.name} seed={job.config.seed}")
    for a in analyses:
        check_finite(a.rows, f"{job.name} seed={job.config.seed}")
    m = ctx._measurement
    features = m.features if m else [None] * len(points)
    layers = [dict(run_id=job.run_id, measure_id=job.measure_id, layer=i, name=p.name, stage=p.stage, features=f)
              for i, (p, f) in enumerate(zip(points, features))]
    how = f", {stacked} seeds stacked" if stacked > 1 else ""
    run = run_row(job, status="complete", error=None, epochs_done=result.epochs_done,
                  train_examples=len(data.train_y), num_params=sum(p.numel() for p in model.parameters()),
                  train_seconds=result.train_seconds, measure_seconds=time.perf_counter() - start,
                  device=_device_name(device) + how, versions=json.dumps(versions()), git_commit=git_commit())
    return RunRows(run=run, metrics=[{"run_id": job.run_id, **m} for m in result.metrics], layers=layers,
                   measure_id=job.measure_id, analyses=analyses, resumed_from=result.resumed_from, notes=result.notes)


def run_stacked(unit: list[Job], reporter=None) -> list[RunRows | Exception]:
    """Train the runs of `unit` (seeds of one configuration) as one stacked model, then measure each."""
    device, data = _start(unit[0])
    models = [build_model(j, data) for j in unit]
    key = unit[0].run_id
    results = train_runs([j.config for j in unit], data, models, device=device,
                         stacked=build_model(unit[0], data, stack=len(unit)), checkpoints=[j.checkpoint for j in unit],
                         on_step=(lambda e, b, n: reporter.step(key, e, b, n)) if reporter else None,
                         on_epoch=[_epoch_callback(reporter, j) for j in unit], keep_epochs=unit[0].keep_epochs)
    outcomes = []
    for job, model, result in zip(unit, models, results):
        try:
            outcomes.append(measure_run(job, data, model, result, device, stacked=len(unit)))
        except Exception as exc:  # one run's analyses failing fails that run alone
            outcomes.append(exc)
    return outcomes


def _epoch_callback(reporter, job: Job):
    return (lambda e, m: reporter.epoch_done(job.run_id, e, m)) if reporter else None


def unit_label(unit: list[Job]) -> str:
    """How progress names a unit of work: one run, or seeds trained together."""
    seeds = ",".join(str(j.config.seed) for j in unit)
    return f"{unit[0].name} seed{'s' if len(unit) > 1 else ''}={seeds}"


def run_unit(unit: list[Job], reporter=None) -> list[RunRows | Exception]:
    """Run a unit of work and return each run's rows or the exception that failed it (never raised):
    what every executor calls, in this process or a worker. `reporter` gets `step` and `epoch_done`.
    Stacked seeds whose training fails (a run diverged, checkpoints at different epochs, out of memory) are
    trained separately instead, resuming from their checkpoints, so that each run's failure is its own."""
    keep_freed_memory()
    if len(unit) > 1:
        try:
            return run_stacked(unit, reporter)
        except DiskFullError as exc:  # stops the sweep
            return [exc] * len(unit)
        except Exception:
            pass
    outcomes = []
    for job in unit:
        on_step = (lambda e, b, n, key=unit[0].run_id: reporter.step(key, e, b, n)) if reporter else None
        try:
            outcomes.append(run_job(job, on_step=on_step, on_epoch=_epoch_callback(reporter, job)))
        except Exception as exc:  # a failed run never blocks the sweep
            outcomes.append(exc)
    return outcomes


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


class JobError(RunFailed):
    """A job's error as described where it was raised (a Ray worker): tracebacks do not cross processes."""


def portable(outcomes: list[RunRows | Exception]) -> list[RunRows | JobError | DiskFullError]:
    """Outcomes that can cross to another process: each error as its description, made where it was raised;
    a full disk as itself, since it stops the sweep on the driver."""
    return [o if isinstance(o, (RunRows, DiskFullError)) else JobError(describe_error(o)) for o in outcomes]


def describe_error(exc: BaseException) -> str:
    """One line for the runs table and the terminal: what went wrong, never where in benchsuite's code."""
    text = str(exc) if isinstance(exc, (RunFailed, BenchError)) else f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())
