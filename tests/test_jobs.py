"""`bench run --jobs N`: real worker processes; the same rows as one job, a killed worker reported or retried
while the rest of the sweep completes, Ctrl-C stopping every worker and a rerun resuming."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchsuite.runner import execute, make_plan
from benchsuite.runner.processes import ProcessExecutor
from benchsuite.spec import parse_spec
from benchsuite.store.engine import open_store
from conftest import assert_same_rows, make_spec, rows

TINY = make_spec("tiny_jobs", train_size=200, eval_size=100, seeds="[0, 1, 2]")
# A few seconds per run: long enough to be killed after its first checkpoint.
SLOW = make_spec("slow_jobs", train_size=600, eval_size=100, depths="[14]", seeds="[0, 1, 2]", epochs=4)


def workers_of(run_id: str) -> list[int]:
    """PIDs of this test session's worker processes running `run_id` (they name themselves bench:<id prefix>)."""
    found = []
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            name = comm.read_text().strip()
            ppid = int((comm.parent / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if name == f"bench:{run_id[:9]}" and ppid == os.getpid():
            found.append(int(comm.parent.name))
    return found


class Messages:
    """A reporter that keeps what executors and the driver report."""

    def __init__(self):
        self.lines, self.started, self.epochs = [], [], []

    def start_run(self, key, label, epochs):
        self.started.append(label)

    def step(self, key, epoch, batch, batches):
        pass

    def epoch_done(self, run_id, epochs_done, metrics):
        self.epochs.append((run_id, epochs_done, sorted(m["name"] for m in metrics)))

    def stop_run(self, key):
        pass

    def end_run(self, message):
        self.lines.append(message)


def plan(workdir: Path, text: str, db: str):
    engine = open_store(str(workdir / db), create=True)
    return make_plan(parse_spec(text, "spec.yaml"), "h", engine, artifacts=str(workdir / f"{db}_artifacts")).jobs, engine


def test_two_jobs_store_the_same_bits_as_one(workdir, cli):
    (workdir / "tiny.yaml").write_text(TINY)
    one = cli("run", "tiny.yaml", "--db", "one.duckdb", "--artifacts", "one", "--jobs", "1", "--threads", "1")
    assert one.exit_code == 0, one.output
    two = cli("run", "tiny.yaml", "--db", "two.duckdb", "--artifacts", "two", "--jobs", "2", "--threads", "1")
    assert two.exit_code == 0, two.output
    assert "3 complete, 0 failed" in two.stderr
    assert len(list((workdir / "two" / "runs").glob("*/last.pt"))) == 3
    assert_same_rows(workdir / "one.duckdb", workdir / "two.duckdb")


def test_workers_report_every_epoch_to_the_driver(workdir):
    jobs, engine = plan(workdir, TINY, "epochs.duckdb")
    messages = Messages()
    assert execute(jobs, engine, ProcessExecutor(2), reporter=messages) == {"complete": 3, "failed": 0, "skipped": 0}
    names = ["eval_acc", "eval_loss", "lr", "train_acc", "train_loss"]
    assert sorted(messages.epochs) == sorted((j.run_id, e, names) for j in jobs for e in (1, 2))
    assert sorted(messages.started) == [f"{jobs[0].name} seed={s}" for s in (0, 1, 2)]


def kill_worker_of(job, killed: list) -> threading.Thread:
    """In the background: once `job` has a checkpoint, SIGKILL the worker process training it."""
    def watch():
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            pids = workers_of(job.run_id) if job.checkpoint.exists() else []
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            killed.extend(pids)
            time.sleep(0.005)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_killed_worker_is_reported_failed_and_the_rest_complete(workdir):
    jobs, engine = plan(workdir, SLOW, "dead.duckdb")
    killed, messages = [], Messages()
    watcher = kill_worker_of(jobs[0], killed)
    counts = execute(jobs, engine, ProcessExecutor(2, retries=0), reporter=messages)
    watcher.join()
    assert killed, "the run finished before its worker could be killed"
    assert counts == {"complete": 2, "failed": 1, "skipped": 0}, messages.lines
    statuses = dict(rows(workdir / "dead.duckdb", "SELECT run_id, status || ': ' || coalesce(error, '') FROM runs"))
    assert statuses[jobs[0].run_id] == f"failed: worker process died (killed by SIGKILL) while running {jobs[0].name} seed=0"
    assert [statuses[j.run_id] for j in jobs[1:]] == ["complete: ", "complete: "]
    assert rows(workdir / "dead.duckdb", f"SELECT count(*) FROM metrics WHERE run_id = '{jobs[0].run_id}'") == [(0,)]


def test_killed_worker_is_retried_and_resumes_from_its_checkpoint(workdir):
    jobs, engine = plan(workdir, SLOW.replace("seeds: [0, 1, 2]", "seeds: [0, 1]"), "retry.duckdb")
    killed, messages = [], Messages()
    watcher = kill_worker_of(jobs[0], killed)
    counts = execute(jobs, engine, ProcessExecutor(2, retries=1), reporter=messages)
    watcher.join()
    assert killed and counts == {"complete": 2, "failed": 0, "skipped": 0}, messages.lines
    assert any("resumed from epoch" in line and "seed=0" in line for line in messages.lines), messages.lines
    assert rows(workdir / "retry.duckdb", "SELECT count(*) FROM metrics WHERE name = 'eval_acc'") == [(8,)]


def test_ctrl_c_stops_every_worker_and_a_rerun_resumes(workdir):
    (workdir / "slow.yaml").write_text(SLOW.replace("seeds: [0, 1, 2]", "seeds: [0, 1]"))
    artifacts = workdir / "art"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "BENCH_JOBS": "2"}
    command = [sys.executable, "-m", "benchsuite", "run", "slow.yaml", "--db", "c.duckdb", "--artifacts", str(artifacts)]
    # its own process group, as a shell gives a foreground job: Ctrl-C signals the driver and its workers
    driver = subprocess.Popen(command, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True)
    deadline = time.time() + 120
    while not list(artifacts.glob("runs/*/last.pt")) and time.time() < deadline and driver.poll() is None:
        time.sleep(0.01)
    os.killpg(driver.pid, signal.SIGINT)
    out, _ = driver.communicate(timeout=60)
    assert driver.returncode == 130 and "interrupted" in out, out
    statuses = dict(rows(workdir / "c.duckdb", "SELECT run_id, status FROM runs"))
    assert "running" in statuses.values(), out
    group = subprocess.run(["ps", "-o", "pid=,stat=,args=", "-g", str(driver.pid)], capture_output=True, text=True)
    running = [line for line in group.stdout.splitlines() if line.split()[1][0] != "Z"]  # zombies: exited
    assert not running, f"workers still running: {running}"

    resumed = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from epoch" in resumed.stderr
    assert rows(workdir / "c.duckdb", "SELECT status, count(*) FROM runs GROUP BY status") == [("complete", 2)]

