import os
from pathlib import Path

import pytest
import torch

from conftest_services import *  # noqa: F401,F403  (session fixtures: a Ray cluster, a PostgreSQL server)

# Two cores shared by the test process and the subprocesses it starts: one thread each avoids
# OpenMP spin-waits that slow small models down tenfold under contention.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)
# `bench run` in-process by default: worker processes (tests/test_jobs.py) cost a start-up each.
os.environ.setdefault("BENCH_JOBS", "1")

def make_spec(name: str = "tiny", *, train_size: int = 300, eval_size: int = 120, depths: str = "[8]",
              seeds: str = "[0]", epochs: int = 2, batch_size: int = 64, analyses: str = "[cka, pcs]",
              measure: str = "{batch_size: 50}") -> str:
    """A spec small enough to train in seconds on digits; tests vary only what they need."""
    return f"""\
name: {name}
dataset: {{name: digits, train_size: {train_size}, eval_size: {eval_size}}}
family: {{name: cifar_resnet, grid: {{depth: {depths}, width: [1]}}}}
seeds: {seeds}
train: {{epochs: {epochs}, batch_size: {batch_size}, lr: 0.05}}
measure: {measure}
analyses: {analyses}
"""


TINY_SPEC = make_spec()


def eval_features(job, batch_size: int = 50, examples: int | None = None) -> list[list]:
    """A stored run's probe-point activations (NumPy), batch by batch over the evaluation set (its class-balanced
    subset of `examples`), from its checkpoint."""
    from benchsuite.measure import FeatureCapture
    from benchsuite.models import probe_points
    from benchsuite.runner.jobs import build_model
    from benchsuite.train import prepare_data

    data = prepare_data(job.config.dataset, eval_batch_size=batch_size)
    model = build_model(job, data)
    model.load_state_dict(torch.load(job.checkpoint, weights_only=True)["model"])
    model.eval()
    batches = []
    with FeatureCapture(model, probe_points(model)) as cap, torch.no_grad():
        for xb, _ in data.eval_loader("cpu", examples).epoch():
            model(xb)
            batches.append([f.numpy() for f in cap.features])
    return batches


# Deterministic columns of each table (timings, dates and the device string differ between the two runs).
COMPARED = {
    "runs": "run_id, name, seed, status, epochs_done, num_params, train_examples",
    "metrics": "run_id, name, epoch, value",
    "layers": "run_id, layer, name, stage, features",
    "analyses": "analysis_id, kind, status",
    "cka": "analysis_id, run_a, epoch_a, layer_a, run_b, epoch_b, layer_b, pc_removed, value",
    "pcs": "analysis_id, run_id, layer, pc1_fraction, lambda1, total_variance",
    "pc_scores": "analysis_id, run_id, layer, example, score",
    "pc_cosines": "analysis_id, run_a, layer_a, run_b, layer_b, value",
}


def rows(db, sql: str) -> list[tuple]:
    """Every row of a query on a DuckDB file, opened read-only."""
    import sqlalchemy as sa

    engine = sa.create_engine(f"duckdb:///{db}", connect_args={"read_only": True}, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(sql))]


def assert_same_rows(db_a, db_b) -> None:
    """The deterministic columns of every table hold the same bits in both databases."""
    for table, columns in COMPARED.items():
        sql = f"SELECT {columns} FROM {table} ORDER BY ALL"
        a, b = rows(db_a, sql), rows(db_b, sql)
        assert len(a) == len(b) > 0, table
        assert a == b, table


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A fresh folder as the working directory, with the database and artifacts inside it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BENCH_DB", raising=False)
    monkeypatch.delenv("BENCH_ARTIFACTS", raising=False)
    return tmp_path


@pytest.fixture
def tiny_spec(workdir) -> Path:
    path = workdir / "tiny.yaml"
    path.write_text(TINY_SPEC)
    return path


@pytest.fixture
def cli():
    """Invoke `bench ...` in-process; returns the Click result (exit_code, stdout, stderr)."""
    from typer.testing import CliRunner

    from benchsuite.cli import app

    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)

    return invoke
