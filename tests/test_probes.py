"""Linear probes: a probe on the features the head reads matches the model; noise is at chance."""

import pytest
import torch

from benchsuite.analyses.probes import fit_linear_probe, pool
from benchsuite.models import create_model, probe_points
from benchsuite.runner.analyses import RunContext, _RUN_ANALYSES
from benchsuite.spec import DatasetSpec, RunConfig, TrainSpec
from benchsuite.train import evaluate, prepare_data, train


@pytest.fixture(scope="module")
def trained():
    """depth-8 CIFAR ResNet trained on digits for 8 epochs (~5 s on one core)."""
    dataset = DatasetSpec(name="digits", eval_size=500)
    config = RunConfig(family="cifar_resnet", params={"depth": 8, "width": 1}, dataset=dataset,
                       train=TrainSpec(epochs=8, batch_size=64, lr=0.05), seed=0)
    data = prepare_data(dataset, eval_batch_size=250)
    torch.manual_seed(0)
    model = create_model("cifar_resnet", num_classes=data.num_classes, in_chans=data.in_chans,
                         image_size=data.image_size, depth=8)
    train(config, data, model, device=torch.device("cpu"))
    return model, data


def test_probe_on_the_heads_input_matches_the_model(trained):
    model, data = trained
    model_acc = evaluate(model, data.eval_loader("cpu"), None)[1]
    points = probe_points(model)
    ctx = RunContext("r", model, data, points, torch.device("cpu"), epoch=8)
    rows = _RUN_ANALYSES["probes"](ctx, {})["probes"]
    assert [r["layer"] for r in rows] == list(range(len(points)))
    last = rows[-1]  # the last block's output, average-pooled: exactly what the linear head reads
    assert model_acc > 0.9
    assert abs(last["accuracy"] - model_acc) <= 0.02, (last["accuracy"], model_acc)
    assert all(0 <= r["accuracy"] <= 1 and 0 <= r["train_accuracy"] <= 1 for r in rows)
    assert rows[0]["accuracy"] < last["accuracy"]  # the stem is less linearly decodable than the last block


def test_probe_on_noise_is_at_chance():
    g = torch.Generator().manual_seed(0)
    train_x, eval_x = torch.randn(1000, 64, generator=g), torch.randn(2000, 64, generator=g)
    train_y, eval_y = torch.randint(0, 10, (1000,), generator=g), torch.randint(0, 10, (2000,), generator=g)
    train_acc, acc = fit_linear_probe(train_x, train_y, eval_x, eval_y, 10)
    assert abs(acc - 0.1) < 0.03  # chance is 0.1; sd of the estimate ~0.007
    assert train_acc > acc  # it does fit the training noise


def test_probe_separates_linearly_separable_classes():
    g = torch.Generator().manual_seed(1)
    centres = 4 * torch.randn(5, 20, generator=g)
    train_y, eval_y = torch.arange(500) % 5, torch.arange(250) % 5
    train_x = centres[train_y] + torch.randn(500, 20, generator=g)
    eval_x = centres[eval_y] + torch.randn(250, 20, generator=g)
    assert fit_linear_probe(train_x, train_y, eval_x, eval_y, 5) == (1.0, 1.0)


def test_pooling():
    f = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).view(2, 3, 2, 2)
    assert torch.equal(pool(f, "avg"), f.mean((2, 3)))
    assert pool(f, "none").shape == (2, 12)
    assert pool(torch.ones(4, 7), "avg").shape == (4, 7)  # already flat: unchanged
