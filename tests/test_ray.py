"""The Ray executor on a real local Ray cluster (one per test session): same results as a local run, job
errors recorded without retry, a killed worker retried from its checkpoint, Ctrl-C cancelling the sweep."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from benchsuite.runner import execute, make_plan
from benchsuite.spec import MeasureSpec, parse_spec
from benchsuite.store.engine import open_store
from conftest import assert_same_rows, make_spec, rows

TINY = make_spec("tiny_ray", train_size=200, eval_size=100, seeds="[0, 1]")
# Long enough (a few seconds) to be killed or interrupted after its first checkpoint.
SLOW = TINY.replace("train_size: 200", "train_size: 600").replace("depth: [8]", "depth: [14]").replace("epochs: 2", "epochs: 4")

def ray_tasks_of(run_id: str) -> list[int]:
    """PIDs of this test session's Ray workers running the task of `run_id` (its name is the process title)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])

    def ours(pid: int) -> bool:  # a descendant of pytest: never another user's Ray
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == os.getpid():
                return True
        return False

    found = []
    for pid in parents:
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if title.startswith(b"ray::bench ") and run_id.encode() in title and ours(pid):
            found.append(pid)
    return found


class Messages:
    """A reporter that keeps the driver's per-run lines (the Ray executor reports only finished runs)."""

    def __init__(self):
        self.lines = []

    def end_run(self, message: str) -> None:
        self.lines.append(message)


def plan(workdir: Path, text: str, db: str):
    spec = parse_spec(text, "spec.yaml")
    engine = open_store(str(workdir / db), create=True)
    return make_plan(spec, "h", engine, artifacts=str(workdir / f"{db}_artifacts")).jobs, engine


def test_ray_sweep_stores_what_a_local_run_stores(ray_cluster, workdir, cli):
    (workdir / "tiny.yaml").write_text(TINY)
    local = cli("run", "tiny.yaml", "--db", "local.duckdb", "--artifacts", "local_artifacts")
    assert local.exit_code == 0, local.output
    remote = cli("run", "tiny.yaml", "--db", "ray.duckdb", "--artifacts", "ray_artifacts", "--executor", "ray",
                 "--address", ray_cluster)
    assert remote.exit_code == 0, remote.output
    assert "2 complete, 0 failed" in remote.stderr
    assert sorted((workdir / "ray_artifacts" / "runs").glob("*/last.pt"))  # checkpoints in the job's artifacts
    assert_same_rows(workdir / "local.duckdb", workdir / "ray.duckdb")  # same bits: one torch thread per job on both sides


def test_job_error_is_recorded_and_the_sweep_goes_on(ray_cluster, workdir):
    from benchsuite.runner.ray_executor import RayExecutor

    jobs, engine = plan(workdir, TINY, "err.duckdb")
    jobs[1].measure = MeasureSpec(probes=["no_such_module*"], batch_size=50)  # fails after training
    counts = execute(jobs, engine, RayExecutor(), reporter=Messages())
    assert counts == {"complete": 1, "failed": 1, "skipped": 0}
    (status, error), = rows(workdir / "err.duckdb", f"SELECT status, error FROM runs WHERE run_id = '{jobs[1].run_id}'")
    # the worker's one-line description (no internal file:line): an application error, never retried
    assert status == "failed" and error.startswith("probe selection") and ".py:" not in error
    assert rows(workdir / "err.duckdb", f"SELECT status FROM runs WHERE run_id = '{jobs[0].run_id}'") == [("complete",)]


def kill_when(job, ready, killed: list) -> threading.Thread:
    """In the background: once `ready()`, SIGKILL the worker process running `job`'s task."""
    def watch():
        deadline = time.time() + 120
        while time.time() < deadline:
            pids = ray_tasks_of(job.run_id) if ready() else []
            if pids:
                for pid in pids:
                    os.kill(pid, signal.SIGKILL)
                killed.extend(pids)
                return
            time.sleep(0.005)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_killed_worker_is_retried_and_resumes_from_its_checkpoint(ray_cluster, workdir):
    from benchsuite.runner.ray_executor import RayExecutor

    (job,), engine = plan(workdir, SLOW.replace("seeds: [0, 1]", "seeds: [0]"), "kill.duckdb")
    killed, messages = [], Messages()
    watcher = kill_when(job, job.checkpoint.exists, killed)
    counts = execute([job], engine, RayExecutor(retries=2), reporter=messages)
    watcher.join()
    assert killed, "the job finished before its worker could be killed"
    assert counts == {"complete": 1, "failed": 0, "skipped": 0}, messages.lines
    assert "resumed from epoch" in messages.lines[0]
    db = workdir / "kill.duckdb"
    assert rows(db, "SELECT status, epochs_done FROM runs") == [("complete", 4)]
    assert rows(db, "SELECT count(*) FROM metrics WHERE name = 'eval_acc'") == [(4,)]
    assert rows(db, "SELECT count(*) FROM cka") == rows(db, "SELECT count(*) * count(*) * 2 FROM layers")


def test_worker_killed_more_often_than_retries_is_recorded_failed(ray_cluster, workdir):
    from benchsuite.runner.ray_executor import RayExecutor

    (job,), engine = plan(workdir, SLOW.replace("seeds: [0, 1]", "seeds: [0]"), "dead.duckdb")
    killed = []
    watcher = kill_when(job, lambda: True, killed)
    counts = execute([job], engine, RayExecutor(retries=0), reporter=Messages())
    watcher.join()
    assert killed and counts["failed"] == 1
    (status, error), = rows(workdir / "dead.duckdb", "SELECT status, error FROM runs")
    assert status == "failed" and error.startswith("WorkerCrashedError")


def test_interrupted_driver_cancels_its_tasks(ray_cluster, workdir):
    """Ctrl-C (as the signal handler raises it) while two jobs run on the two CPUs and a third waits: all three
    are cancelled, although this driver stays connected to the cluster; the third never starts."""
    import _thread

    from benchsuite.runner.ray_executor import RayExecutor

    jobs, engine = plan(workdir, SLOW.replace("seeds: [0, 1]", "seeds: [0, 1, 2]"), "int.duckdb")

    def interrupt_after_a_checkpoint():
        deadline = time.time() + 120
        while not any(j.checkpoint.exists() for j in jobs) and time.time() < deadline:
            time.sleep(0.005)
        _thread.interrupt_main()

    threading.Thread(target=interrupt_after_a_checkpoint, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        execute(jobs, engine, RayExecutor(), reporter=Messages())
    deadline = time.time() + 30
    while any(ray_tasks_of(j.run_id) for j in jobs) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(ray_tasks_of(j.run_id) for j in jobs), "a cancelled task still runs"
    time.sleep(1)  # time for the third to start, were it still queued
    assert sum(j.checkpoint.exists() for j in jobs) <= 2 and not any(ray_tasks_of(j.run_id) for j in jobs)
    assert rows(workdir / "int.duckdb", "SELECT status, count(*) FROM runs GROUP BY status") == [("running", 3)]
    assert rows(workdir / "int.duckdb", "SELECT count(*) FROM metrics") == [(0,)]


def test_ctrl_c_cancels_outstanding_jobs_and_leaves_the_database_consistent(ray_cluster, workdir):
    (workdir / "slow.yaml").write_text(SLOW)
    artifacts = workdir / "art"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    driver = subprocess.Popen([sys.executable, "-m", "benchsuite", "run", "slow.yaml", "--db", "c.duckdb",
                               "--artifacts", str(artifacts), "--executor", "ray", "--address", ray_cluster],
                              cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while not list(artifacts.glob("runs/*/last.pt")) and time.time() < deadline and driver.poll() is None:
        time.sleep(0.01)
    driver.send_signal(signal.SIGINT)
    out, _ = driver.communicate(timeout=60)
    assert driver.returncode == 130, out
    assert "interrupted" in out
    db = workdir / "c.duckdb"
    statuses = dict(rows(db, "SELECT run_id, status FROM runs"))
    assert len(statuses) == 2 and "running" in statuses.values(), out
    unfinished = [r for r, s in statuses.items() if s != "complete"]
    for table in ("metrics", "layers", "pcs"):  # an interrupted run wrote nothing but its status
        assert rows(db, f"SELECT count(*) FROM {table} WHERE run_id IN ({', '.join(repr(r) for r in unfinished)})") == [(0,)]
    deadline = time.time() + 30
    while any(ray_tasks_of(r) for r in unfinished) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(ray_tasks_of(r) for r in unfinished), "a cancelled task still runs"


@pytest.mark.parametrize("args, message", [
    (["--address", "auto"], "need --executor ray"),
    (["--executor", "dask"], "not one of local, ray"),
])
def test_executor_options_are_checked_before_anything_runs(workdir, cli, args, message):
    (workdir / "tiny.yaml").write_text(TINY)
    result = cli("run", "tiny.yaml", *args)
    assert result.exit_code == 2 and message in result.stderr
    assert not (workdir / "bench.duckdb").exists()
