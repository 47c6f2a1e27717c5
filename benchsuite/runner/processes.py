"""Parallel local jobs (`bench run --jobs N`): units of work run in N worker processes on this machine.

Workers train and measure; they never open the database. Each sends its progress (steps, finished
epochs) and its outcomes to the driver over its own pipe, and the driver, the only writer, stores them.
A worker that dies (killed, out of memory) is replaced; its unit runs again, resuming from the
checkpoints, up to `retries` times, and is then recorded failed: the rest of the sweep goes on.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path

import torch

from benchsuite.errors import RunFailed
from benchsuite.runner.jobs import Job, portable, run_unit, unit_label


def default_jobs(device: torch.device) -> int:
    """`bench run`'s default: on CPU a single-threaded job per core and two more, so that the last runs of a
    sweep share the cores instead of leaving some idle (3 runs on 2 cores end after 1.5 run times, not 2);
    single-threaded processes share cores without the spin-waits of oversubscribed OpenMP threads. On GPU one
    job: stacked seeds keep the card busy."""
    return (os.cpu_count() or 1) + 2 if device.type == "cpu" else 1


class WorkerCrashed(RunFailed):
    """The worker process running a unit died before returning it."""


class _Relay:
    """A worker's reporter: forwards progress to the driver, steps at most every 0.1 s."""

    def __init__(self, conn: Connection):
        self.conn, self.last = conn, 0.0

    def step(self, key: str, epoch: int, batch: int, batches: int) -> None:
        now = time.monotonic()
        if now - self.last >= 0.1 or batch == batches:
            self.last = now
            self.conn.send(("step", key, epoch, batch, batches))

    def epoch_done(self, run_id: str, epochs_done: int, metrics: list[dict]) -> None:
        self.conn.send(("epoch", run_id, epochs_done, metrics))


def _die_with_the_driver() -> None:
    """Linux: the kernel kills this worker when the driver dies, even by SIGKILL (no cleanup runs there)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _name_process(run_id: str) -> None:
    """`ps` and `top` show which run a worker trains: bench:<run id prefix> (15 characters at most)."""
    try:
        Path("/proc/self/comm").write_text(f"bench:{run_id[:9]}")
    except OSError:
        pass


def _worker(conn: Connection, threads: int) -> None:
    _die_with_the_driver()
    # Ctrl-C reaches the whole process group; the driver decides what stops, and stops its workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    relay = _Relay(conn)
    while (unit := conn.recv()) is not None:
        _name_process(unit[0].run_id)
        conn.send(("done", portable(run_unit(unit, relay))))


@dataclass
class _Worker:
    process: mp.Process
    conn: Connection
    unit: list[Job] | None = None
    attempt: int = 0


class ProcessExecutor:
    """`workers` worker processes with `threads` torch threads each. Results depend only on the thread
    count, not on the number of workers: with one thread, a sweep stores the same bits as `--jobs 1`."""

    def __init__(self, workers: int, threads: int = 1, retries: int = 2):
        self.workers, self.threads, self.retries = workers, threads, retries
        self._context = mp.get_context("spawn")  # a fresh interpreter: no forked torch thread pools

    def _start(self) -> _Worker:
        ours, theirs = self._context.Pipe()
        process = self._context.Process(target=_worker, args=(theirs, self.threads), daemon=True,
                                        name="bench-worker")
        process.start()
        theirs.close()
        return _Worker(process, ours)

    def submit(self, units, reporter):
        units = iter(units)
        idle: list[_Worker] = []
        busy: list[_Worker] = []
        again: list[tuple[list[Job], int]] = []  # units of crashed workers, with their attempt number
        try:
            while True:
                while len(busy) < self.workers:
                    unit, attempt = again.pop() if again else (next(units, None), 0)
                    if unit is None:
                        break
                    worker = idle.pop() if idle else self._start()
                    worker.unit, worker.attempt = unit, attempt
                    worker.conn.send(unit)
                    busy.append(worker)
                    if reporter:
                        reporter.start_run(unit[0].run_id, unit_label(unit), unit[0].config.train.epochs)
                if not busy:
                    return
                ready = wait([w.conn for w in busy])
                for worker in [w for w in busy if w.conn in ready]:
                    outcomes = self._receive(worker, reporter)
                    if outcomes is None:
                        continue
                    busy.remove(worker)
                    unit, worker.unit = worker.unit, None
                    if reporter:
                        reporter.stop_run(unit[0].run_id)
                    if isinstance(outcomes, WorkerCrashed):
                        worker.conn.close()
                        if worker.attempt < self.retries:
                            again.append((unit, worker.attempt + 1))
                            continue
                        outcomes = [outcomes] * len(unit)
                    else:
                        idle.append(worker)
                    yield from zip(unit, outcomes)
        finally:
            # Ctrl-C or an error in the driver: stop every worker now (checkpoints are written atomically)
            for worker in idle + busy:
                if worker.unit is None and worker.process.is_alive():
                    try:
                        worker.conn.send(None)
                    except OSError:
                        pass
                else:
                    worker.process.terminate()
            for worker in idle + busy:
                worker.process.join(10)
                if worker.process.is_alive():
                    worker.process.kill()
                    worker.process.join()
                worker.conn.close()

    def _receive(self, worker: _Worker, reporter):
        """Handle what `worker` sent; its outcomes when its unit is finished, WorkerCrashed when it died."""
        while worker.conn.poll():
            try:
                kind, *args = worker.conn.recv()
            except (EOFError, OSError):
                worker.process.join()
                code = worker.process.exitcode
                how = f"killed by {signal.Signals(-code).name}" if code and code < 0 else f"exit code {code}"
                return WorkerCrashed(f"worker process died ({how}) while running {unit_label(worker.unit)}")
            if kind == "done":
                return args[0]
            if reporter and kind == "step":
                reporter.step(*args)
            elif reporter and kind == "epoch":
                reporter.epoch_done(*args)
        return None
