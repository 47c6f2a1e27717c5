"""Live progress: the driver stores every finished epoch, and other processes read it while it trains."""

import csv
import os
import subprocess
import sys
import time

from conftest import make_spec, rows

SLOW = make_spec(depths="[20]", epochs=20)  # long enough to be caught mid-run


def _bench(*args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "COLUMNS": "250"}  # tables unfolded
    return subprocess.Popen([sys.executable, "-m", "benchsuite", *args], env=env, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_runs_from_another_process_shows_the_current_epoch_and_watch_follows_the_sweep(workdir, cli):
    (workdir / "s.yaml").write_text(SLOW)
    driver = _bench("run", "s.yaml", cwd=workdir)
    watch = None
    seen = set()  # (epochs, eval_acc is known) while the run is running
    deadline = time.time() + 300
    while driver.poll() is None and time.time() < deadline:
        time.sleep(0.2)
        if (workdir / "bench.duckdb").exists():
            result = cli("runs", "-f", "csv")
            if watch is None and result.exit_code != 0:  # the driver is still creating the schema
                continue
            assert result.exit_code == 0, result.output  # waits for the driver's writes, never fails on its lock
            watch = watch or _bench("runs", "--watch", "--interval", "0.5", cwd=workdir)
            header, *lines = csv.reader(result.stdout.splitlines())
            assert header[:6] == ["name", "seed", "dataset", "status", "epochs", "eval_acc"]
            for _, _, _, status, epochs, acc, *_ in lines:
                if status == "running" and epochs:
                    seen.add((int(epochs), acc != ""))
    out, _ = driver.communicate(timeout=60)
    assert driver.returncode == 0, out  # readers never broke the driver's writes
    assert any(1 <= e < 20 and has_acc for e, has_acc in seen), seen
    # What the reader saw was the stored epoch's own metrics, replaced by the final write.
    assert rows(workdir / "bench.duckdb", "SELECT status, epochs_done FROM runs") == [("complete", 20)]
    assert rows(workdir / "bench.duckdb", "SELECT count(*), count(DISTINCT epoch) FROM metrics WHERE name = 'eval_acc'") == [(20, 20)]
    assert watch is not None
    shown, _ = watch.communicate(timeout=60)  # ends by itself once no run is running
    assert watch.returncode == 0, shown
    assert "0 running" in shown and "complete" in shown  # off a terminal, Live prints its last table only
