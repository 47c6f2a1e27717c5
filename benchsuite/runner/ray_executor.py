"""Ray executor: every job is a Ray task that trains and measures one run on some worker of a cluster and
returns its rows to the driver, which stays the only writer of the database.

Checkpoints go to the job's artifacts folder, as with the local executor. On a cluster of several machines
that folder must be on storage every node and the driver share (NFS, a mounted bucket): a task retried on
another node resumes from it, and the driver's family analyses read the final checkpoints from it.
"""

from __future__ import annotations

from benchsuite.errors import BenchError
from benchsuite.runner.jobs import Job, JobError, portable, run_unit, unit_label
from benchsuite.store.writer import RunRows


def _import_ray():
    try:
        import ray
    except ImportError:
        raise BenchError("--executor ray needs Ray: pip install 'benchsuite[ray]'") from None
    return ray


def _run_on_worker(unit: list[Job]) -> list[RunRows | JobError]:
    """The task. The jobs' own errors are returned, not raised: Ray retries only tasks whose worker died."""
    import ray
    import torch

    # Ray sets OMP_NUM_THREADS to the task's CPUs; torch follows it, so a CPU run computes what it would
    # compute locally with as many threads, whichever node runs it.
    torch.set_num_threads(max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))))
    return portable(run_unit(unit))


class RayExecutor:
    """Runs each job as a Ray task needing `gpus` GPUs and `cpus` CPUs (default: one GPU when the cluster has
    GPUs, else one CPU). A task whose worker process dies (killed, out of memory) is run again up to `retries`
    times and resumes from its checkpoint. `address`: a running cluster (`auto`, HOST:PORT, ray://...);
    None starts a local Ray instance for this sweep. A driver already connected to Ray keeps its connection."""

    def __init__(self, address: str | None = None, gpus: float | None = None, cpus: float | None = None,
                 retries: int = 2):
        _import_ray()  # fail before the driver writes anything
        self.address, self.gpus, self.cpus, self.retries = address, gpus, cpus, retries

    def resources(self, ray) -> dict[str, float]:
        gpus = self.gpus if self.gpus is not None else (1 if ray.cluster_resources().get("GPU", 0) > 0 else 0)
        return {"num_gpus": gpus, "num_cpus": self.cpus if self.cpus is not None else 1}

    def submit(self, units, reporter):
        ray = _import_ray()
        owned = not ray.is_initialized()
        if owned:
            ray.init(address=self.address or "local", include_dashboard=False, logging_level="WARNING")
        pending: dict = {}
        try:
            task = ray.remote(_run_on_worker)
            options = dict(max_retries=self.retries, retry_exceptions=False, **self.resources(ray))
            for unit in units:
                # the task's name is the worker's process title and the dashboard's label
                name = f"bench {unit_label(unit)} {' '.join(j.run_id for j in unit)}"
                pending[task.options(name=name, **options).remote(unit)] = unit
            while pending:
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                unit = pending.pop(ref)
                try:
                    outcomes = ray.get(ref)
                except ray.exceptions.RayError as exc:  # its worker died more often than retries allow, ...
                    outcomes = [exc] * len(unit)
                yield from zip(unit, outcomes)
        finally:
            # Ctrl-C or an error in the driver: nothing left running on the cluster (checkpoints stay)
            for ref in pending:
                ray.cancel(ref, force=True)
            if owned:
                ray.shutdown()
