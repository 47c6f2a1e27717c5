"""Stacked seeds: K runs trained as one grouped model compute what the K runs compute alone, and write
ordinary checkpoints that resume and measure like any other run's."""

import pytest
import torch

from benchsuite.runner import make_plan
from benchsuite.runner.jobs import build_model
from benchsuite.runner.plan import stack_units
from benchsuite.spec import parse_spec
from benchsuite.train import prepare_data, train
from benchsuite.train.loop import train_runs
from conftest import make_spec, rows

# Per-run augmentation (flip_crop) and data order both drawn from each run's seed; 10 SGD steps.
SPEC = make_spec("stack", seeds="[0, 1, 2]", epochs=1, batch_size=32).replace("lr: 0.05}", "lr: 0.05, augmentation: flip_crop}")

# The equivalence tests train in float64. Grouped convolutions sum in another order than K separate ones; in
# float32 that round-off (1e-7) flips a ReLU whose input lies within it of zero in about one run in ten
# (measured here), which moves one BatchNorm channel by up to 2e-2 in a step. In float64 the round-off is
# 2e-16 and compounds to about 2e-15 of each tensor's largest value over 20 steps (measured); a real mistake
# (a shared BatchNorm channel, a run fed another run's batch, a gradient crossing runs) changes weights by
# 1e-3 or more after one step. test_bench_run_with_stacked_seeds_stores_ordinary_runs covers float32.
RTOL = 1e-12


@pytest.fixture
def float64():
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def jobs_of(text: str, artifacts):
    return make_plan(parse_spec(text, "s.yaml"), "h", None, artifacts=str(artifacts)).jobs


def assert_states_agree(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for key in a:
        if a[key].dtype.is_floating_point:  # weights, BatchNorm running means and variances
            scale = a[key].abs().max()
            assert (a[key] - b[key]).abs().max() <= RTOL * scale, key
        else:
            assert torch.equal(a[key], b[key]), key  # num_batches_tracked


def train_stacked(jobs, data, checkpoints=None, on_epoch=None):
    models = [build_model(j, data) for j in jobs]
    results = train_runs([j.config for j in jobs], data, models, device=torch.device("cpu"),
                         stacked=build_model(jobs[0], data, stack=len(jobs)),
                         checkpoints=checkpoints or [None] * len(jobs), on_epoch=on_epoch or [None] * len(jobs))
    return models, results


class Interrupted(Exception):
    pass


def interrupt(epochs_done, metrics):
    raise Interrupted


def test_stacked_runs_match_separate_runs_after_an_epoch(tmp_path, float64):
    jobs = jobs_of(SPEC, tmp_path)
    data = prepare_data(jobs[0].config.dataset, eval_batch_size=50)
    models, results = train_stacked(jobs, data)
    for job, model, result in zip(jobs, models, results):
        alone = build_model(job, data)
        expected = train(job.config, data, alone, device=torch.device("cpu"))
        assert_states_agree(alone.state_dict(), model.state_dict())
        metrics = {m["name"]: m["value"] for m in result.metrics}
        for m in expected.metrics:
            assert metrics[m["name"]] == pytest.approx(m["value"], rel=RTOL), m["name"]
        assert metrics["eval_acc"] == next(m["value"] for m in expected.metrics if m["name"] == "eval_acc")
    # the seeds really differ: different initialisation, order and augmentation give different models
    assert not torch.allclose(models[0].stem[0].weight, models[1].stem[0].weight, atol=1e-3)


def test_stacked_checkpoints_are_ordinary_and_resume_separately(tmp_path, float64):
    """Interrupted after one epoch of two, stacked runs leave the checkpoints the runs leave alone (model,
    momentum, metrics), and a run resumes from its checkpoint alone."""
    jobs = jobs_of(SPEC.replace("epochs: 1", "epochs: 2"), tmp_path / "stacked")
    data = prepare_data(jobs[0].config.dataset, eval_batch_size=50)
    for j in jobs:
        j.checkpoint.parent.mkdir(parents=True)
    with pytest.raises(Interrupted):  # after the last run's first checkpoint
        train_stacked(jobs, data, [j.checkpoint for j in jobs], on_epoch=[None, None, interrupt])
    for job, alone_job in zip(jobs, jobs_of(SPEC.replace("epochs: 1", "epochs: 2"), tmp_path / "alone")):
        alone_job.checkpoint.parent.mkdir(parents=True)
        with pytest.raises(Interrupted):
            train(alone_job.config, data, build_model(alone_job, data), device=torch.device("cpu"),
                  checkpoint=alone_job.checkpoint, on_epoch=interrupt)
        stacked, alone = (torch.load(j.checkpoint, weights_only=False) for j in (job, alone_job))
        assert set(stacked) == set(alone) == {"model", "optimizer", "scaler", "metrics", "epoch", "train_seconds"}
        assert_states_agree(alone["model"], stacked["model"])
        assert alone["optimizer"]["param_groups"] == stacked["optimizer"]["param_groups"]
        momenta = [{str(p): s["momentum_buffer"] for p, s in c["optimizer"]["state"].items()} for c in (alone, stacked)]
        assert_states_agree(*momenta)
        assert [m["value"] for m in stacked["metrics"]] == pytest.approx([m["value"] for m in alone["metrics"]], rel=RTOL)
        result = train(job.config, data, build_model(job, data), device=torch.device("cpu"), checkpoint=job.checkpoint)
        assert (result.resumed_from, result.epochs_done, len(result.metrics)) == (1, 2, 10)


def test_units_stack_seeds_of_one_configuration(tmp_path):
    spec = make_spec("units", depths="[8, 14]", seeds="[0, 1, 2]")
    stacked = spec.replace("lr: 0.05}", "lr: 0.05, stack_seeds: true}")
    assert [[j.config.seed for j in u] for u in stack_units(jobs_of(stacked, tmp_path))] == [[0, 1, 2], [0, 1, 2]]
    assert all(len(u) == 1 for u in stack_units(jobs_of(spec.replace("lr: 0.05}", "lr: 0.05, stack_seeds: false}"), tmp_path)))
    # stacking is how runs execute, not what they are: the same run ids either way
    assert [j.run_id for j in jobs_of(stacked, tmp_path)] == [j.run_id for j in jobs_of(spec, tmp_path)]


def test_bench_run_with_stacked_seeds_stores_ordinary_runs(workdir, cli):
    spec = make_spec("stacked_run", seeds="[0, 1]")
    (workdir / "sep.yaml").write_text(spec.replace("lr: 0.05}", "lr: 0.05, stack_seeds: false}"))
    (workdir / "stk.yaml").write_text(spec.replace("lr: 0.05}", "lr: 0.05, stack_seeds: true}"))
    assert cli("run", "sep.yaml", "--db", "sep.duckdb").exit_code == 0
    result = cli("run", "stk.yaml", "--db", "stk.duckdb")
    assert result.exit_code == 0 and "2 complete, 0 failed" in result.stderr, result.output
    assert all(d.endswith(", 2 seeds stacked") for d, in rows(workdir / "stk.duckdb", "SELECT device FROM runs"))
    for sql in ["SELECT run_id, name, epoch, value FROM metrics ORDER BY ALL",
                "SELECT run_a, layer_a, layer_b, pc_removed, value FROM cka ORDER BY ALL",
                "SELECT run_id, layer, pc1_fraction FROM pcs ORDER BY ALL"]:
        a, b = rows(workdir / "sep.duckdb", sql), rows(workdir / "stk.duckdb", sql)
        assert len(a) == len(b) > 0 and [r[:-1] for r in a] == [r[:-1] for r in b]
        assert [r[-1] for r in b] == pytest.approx([r[-1] for r in a], rel=1e-4, abs=1e-5), sql


def test_stacking_a_family_that_cannot_is_a_spec_error(workdir, cli):
    (workdir / "vit.yaml").write_text("name: v\nfamily: {name: vit}\ntrain: {stack_seeds: true}\n")
    result = cli("validate", "vit.yaml")
    assert result.exit_code == 2
    assert result.stderr.strip() == ("error: vit.yaml: train.stack_seeds: family vit cannot train seeds stacked "
                                     "(families that can: cifar_resnet); use auto or false")
