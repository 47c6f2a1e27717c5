"""`bench run SPEC` and `bench validate SPEC`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from benchsuite.cli._common import DataDirOption, DbOption, console, err_console, print_rows

SetOption = Annotated[list[str] | None, typer.Option(
    "--set", metavar="KEY=VALUE", help="override a spec field, e.g. train.epochs=5, seeds=[0], family.grid.depth=[20,56] (repeatable)")]


def register(app: typer.Typer) -> None:
    @app.command("validate")
    def validate(specs: Annotated[list[Path], typer.Argument(help="YAML spec files")], overrides: SetOption = None) -> None:
        """Check specs without running anything."""
        from benchsuite.spec import expand, load_spec

        for path in specs:
            spec = load_spec(path, overrides or ())
            console.print(f"{path}: ok, {len(expand(spec))} runs ({spec.family.name} on {spec.dataset.name})")

    @app.command("run")
    def run(
        spec_paths: Annotated[list[Path], typer.Argument(help="YAML spec files, run one after another into one database",
                                                         show_default=False)],
        overrides: SetOption = None,
        db: DbOption = None,
        data_dir: DataDirOption = None,
        artifacts: Annotated[str | None, typer.Option(help="checkpoint folder [env: BENCH_ARTIFACTS; default: bench_artifacts]")] = None,
        device: Annotated[str, typer.Option(help="auto (cuda, then cpu), cpu, cuda, cuda:1, ...")] = "auto",
        dry_run: Annotated[bool, typer.Option("--dry-run", help="print the plan, run nothing")] = False,
        executor: Annotated[str, typer.Option(help="local (this process, one device) or ray (a Ray cluster)")] = "local",
        address: Annotated[str | None, typer.Option(help="ray: auto, HOST:PORT or ray://...; default: start a local Ray instance")] = None,
        gpus: Annotated[float | None, typer.Option(help="ray: GPUs per run; default: the spec's resources, else 1 if the cluster has GPUs")] = None,
        cpus: Annotated[float | None, typer.Option(help="ray: CPU cores per run; default: the spec's resources, else 1")] = None,
        retries: Annotated[int, typer.Option(min=0, help="ray and --jobs: reruns of a job whose worker process died")] = 2,
        jobs: Annotated[int | None, typer.Option(min=1, help="runs at once, in worker processes [env: BENCH_JOBS; default: one per core on CPU, 1 on GPU]")] = None,
        threads: Annotated[int | None, typer.Option(min=1, help="torch CPU threads per job [env: BENCH_THREADS; default: 1 with several jobs, else cores - 1]")] = None,
    ) -> None:
        """Train and measure every run of the specs that the database does not hold yet."""
        from benchsuite.spec import read_spec

        specs = [(path, *read_spec(path, overrides or ())) for path in spec_paths]  # all valid before any runs
        if not dry_run:
            from benchsuite.train.data import preflight

            for path, spec, _ in specs:
                preflight(spec.dataset, data_dir, str(path))  # a missing dataset: one line, nothing stored
        artifacts = artifacts or os.environ.get("BENCH_ARTIFACTS") or "bench_artifacts"
        failed = False
        try:
            for path, spec, text in specs:  # the options are checked with the first spec, before anything runs
                runner = _executor(executor, address, gpus, cpus, retries, spec, jobs, threads, device)
                failed |= _run_spec(path, spec, text, runner, db, data_dir, artifacts, device, dry_run)
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]: finished runs are stored; rerun the same command to resume")
            raise typer.Exit(130)
        if failed:
            raise typer.Exit(1)


def _run_spec(spec_path: Path, spec, text: str, runner, db, data_dir, artifacts: str, device: str, dry_run: bool) -> bool:
    """Plan one spec against the database, then train, measure and store what it lacks (or print the plan);
    returns whether any run or family analysis failed."""
    from benchsuite.runner import execute, make_plan
    from benchsuite.runner.family import run_family_analyses
    from benchsuite.runner.progress import Reporter
    from benchsuite.spec import spec_hash
    from benchsuite.store.engine import database_exists, open_store, resolve_url
    from benchsuite.store.writer import record_spec

    engine = None if dry_run and not database_exists(db) else open_store(db, create=not dry_run)
    plan = make_plan(spec, spec_hash(text), engine, artifacts=str(Path(artifacts).resolve()),
                     data_dir=data_dir and str(Path(data_dir).resolve()), device=device)  # workers have other cwds
    if dry_run:
        rows = [(j.name, j.config.seed, j.config.dataset.name, j.status, ", ".join(a.kind for a in j.analyses), j.run_id)
                for j in plan.jobs]
        print_rows(["run", "seed", "dataset", "status", "analyses", "run_id"], rows,
                   title=f"{spec.name}: {len(plan.todo)} of {len(plan.jobs)} runs to do")
        return False
    record_spec(engine, plan.spec_hash, spec.name, str(spec_path), text)
    todo = plan.todo
    err_console.print(f"{spec.name}: {len(todo)} of {len(plan.jobs)} runs to do -> {resolve_url(db)}")
    counts = {"complete": 0, "failed": 0}
    if todo:
        with Reporter(len(todo), err_console, engine) as reporter:
            counts = execute(todo, engine, runner, reporter=reporter)
        skipped = f", {counts['skipped']} skipped (another driver)" if counts["skipped"] else ""
        err_console.print(f"{counts['complete']} complete, {counts['failed']} failed{skipped}")
    family = run_family_analyses(plan, engine, err_console, device)
    return bool(counts["failed"] or family["failed"])


def _local_executor(jobs: int | None, threads: int | None, retries: int, device: str):
    """In this process, or in worker processes (default: benchsuite.runner.processes.default_jobs). With one
    job, cores - 1 threads by default: OpenMP threads that outnumber the free cores spin-wait, which slows small
    models tenfold on a busy machine. The driver computes with the jobs' thread count too, so results depend
    on --threads alone."""
    import torch

    from benchsuite.runner.processes import ProcessExecutor, default_jobs
    from benchsuite.train import select_device

    jobs = jobs or int(os.environ.get("BENCH_JOBS") or 0) or default_jobs(select_device(device))
    threads = threads or int(os.environ.get("BENCH_THREADS") or 0) or (1 if jobs > 1 else max(1, (os.cpu_count() or 1) - 1))
    torch.set_num_threads(threads)
    return ProcessExecutor(jobs, threads, retries) if jobs > 1 else None


def _executor(name: str, address: str | None, gpus: float | None, cpus: float | None, retries: int, spec,
              jobs: int | None, threads: int | None, device: str):
    """The local executor (None: this process) or Ray, whose resources come from the options, else the spec."""
    from benchsuite.errors import BenchError

    if name == "local":
        if address is not None or gpus is not None or cpus is not None:
            raise BenchError("--address, --gpus and --cpus need --executor ray")
        return _local_executor(jobs, threads, retries, device)
    if name != "ray":
        raise BenchError(f"--executor {name!r} is not one of local, ray")
    if jobs is not None:
        raise BenchError("--jobs is for --executor local; a Ray cluster runs as many jobs as it has resources for")
    _local_executor(1, threads, retries, device)  # the driver's threads, for family analyses
    from benchsuite.runner.ray_executor import RayExecutor

    return RayExecutor(address, gpus if gpus is not None else spec.resources.gpus,
                       cpus if cpus is not None else spec.resources.cpus, retries)
