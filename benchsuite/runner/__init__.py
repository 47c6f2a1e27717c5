"""Plan -> execute: jobs from a spec, executors that run them, the driver that stores results."""

from benchsuite.runner.execute import LocalExecutor, execute
from benchsuite.runner.jobs import Job, run_job
from benchsuite.runner.plan import Plan, make_plan

__all__ = ["Job", "LocalExecutor", "Plan", "execute", "make_plan", "run_job"]
