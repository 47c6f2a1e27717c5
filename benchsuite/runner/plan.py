"""Plan: expand a spec into jobs and drop what the database already holds."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from sqlalchemy.engine import Engine

from benchsuite.runner.analyses import analysis_id, per_run_kinds
from benchsuite.runner.jobs import Job, PlannedAnalysis
from benchsuite.spec import Spec, expand, run_id, run_name
from benchsuite.spec.load import config_key
from benchsuite.store.writer import complete_analyses, run_statuses


@dataclass
class Plan:
    spec: Spec
    spec_hash: str
    jobs: list[Job]  # every run of the spec, in grid order

    @property
    def todo(self) -> list[Job]:
        return [j for j in self.jobs if j.status != "done"]


def make_plan(spec: Spec, spec_hash: str, engine: Engine | None, *, artifacts: str, data_dir: str | None = None,
              device: str = "auto") -> Plan:
    statuses = run_statuses(engine) if engine is not None else {}
    done_analyses = complete_analyses(engine) if engine is not None else set()
    measure = spec.measure.analysis_key()
    keep_epochs = sorted({e for a in spec.analyses if a.kind == "training_cka" for e in a.options.get("epochs", [])})
    jobs = []
    for config in expand(spec):
        rid = run_id(config)
        analyses = [PlannedAnalysis(analysis_id(a.kind, a.options, [rid], measure), a.kind, a.options)
                    for a in spec.analyses if a.kind in per_run_kinds()]
        status = statuses.get(rid, "new")
        if status == "complete" and all(a.analysis_id in done_analyses for a in analyses):
            status = "done"
        jobs.append(Job(run_id=rid, name=run_name(config), config=config, measure=spec.measure, analyses=analyses,
                        spec_hash=spec_hash, artifacts=artifacts, data_dir=data_dir, device=device, status=status,
                        keep_epochs=keep_epochs))
    return Plan(spec, spec_hash, jobs)


MAX_STACK = 8  # seeds per stacked model: beyond that a GPU gains little and memory grows


def stacks(job: Job) -> bool:
    """Whether `job` trains stacked with the other seeds of its configuration: `train.stack_seeds`, and for
    `auto`, where it is faster, i.e. on a GPU (on a CPU, parallel jobs gain more; see README)."""
    from benchsuite.models import get_family
    from benchsuite.train import select_device
    from benchsuite.train.loop import autocast_dtype

    choice, device = job.config.train.stack_seeds, select_device(job.device)
    if choice is False or not get_family(job.config.family).stacks:
        return False
    if autocast_dtype(job.config.train.precision, device) is torch.float16:
        return False  # one loss scale for all runs would skip every run's step when one overflows
    return choice is True or device.type == "cuda"


def stack_units(jobs: list[Job]) -> list[list[Job]]:
    """Units of work in plan order: each job alone, or with the seeds of its configuration it stacks with."""
    groups: dict[str, list[Job]] = {}
    units = []
    for job in jobs:
        if not stacks(job):
            units.append([job])
            continue
        key = config_key(job.config)
        if key not in groups or len(groups[key]) == MAX_STACK:
            groups[key] = []
            units.append(groups[key])
        groups[key].append(job)
    return units
