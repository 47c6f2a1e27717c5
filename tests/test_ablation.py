"""Block deletion: a block whose residual branch outputs zero can be deleted without changing anything."""

import pytest
import torch

from benchsuite.analyses import ablation
from benchsuite.analyses.ablation import skippable_blocks, skipped
from benchsuite.measure.blocks import Block
from benchsuite.models import create_model, probe_points
from benchsuite.runner.analyses import RunContext, _RUN_ANALYSES
from benchsuite.spec import DatasetSpec
from benchsuite.train import prepare_data


@pytest.fixture(scope="module")
def data():
    return prepare_data(DatasetSpec(name="digits", train_size=100, eval_size=120), eval_batch_size=60)


def model_for(data, depth=14):
    torch.manual_seed(0)
    model = create_model("cifar_resnet", num_classes=data.num_classes, in_chans=data.in_chans,
                         image_size=data.image_size, depth=depth)
    for m in model.modules():  # non-trivial running statistics, so eval-mode BN is not the identity
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def logits(model, data):
    with torch.no_grad():
        return torch.cat([model(x) for x, _ in data.eval_loader("cpu").epoch()])


def test_deleting_a_block_with_a_zero_branch_leaves_the_logits_unchanged(data):
    model = model_for(data)
    blocks = skippable_blocks(model, probe_points(model))
    assert [b.name for b in blocks] == [f"stages.{s}.{b}" for s in range(3) for b in range(2)]
    zeroed, other = blocks[1], blocks[3]
    with torch.no_grad():
        zeroed.module.bn2.weight.zero_()
        zeroed.module.bn2.bias.zero_()
    intact = logits(model, data)
    with skipped([zeroed]):
        assert zeroed.module.skip_branch
        assert torch.equal(logits(model, data), intact)
    with skipped([other]):
        assert not torch.allclose(logits(model, data), intact)  # a live branch does matter
    assert not any(b.module.skip_branch for b in blocks)


def test_ablation_rows(data, monkeypatch):
    model = model_for(data)
    points = probe_points(model)
    blocks = skippable_blocks(model, points)
    with torch.no_grad():
        blocks[1].module.bn2.weight.zero_()
        blocks[1].module.bn2.bias.zero_()
    # A detected block structure over probe points 0-2 (the stem and the first two residual blocks).
    structure = Block(start=0, end=2, size_fraction=3 / 7, mean_cka=0.9, mean_pc1=0.7, survives_pc1_removal=None, score=0.2)
    monkeypatch.setattr(ablation, "detect", lambda m, options: [structure])
    ctx = RunContext("r", model, data, points, torch.device("cpu"), epoch=1)
    rows = _RUN_ANALYSES["ablation"](ctx, {})["ablations"]
    by_target = {r["target"]: r for r in rows}
    assert list(by_target) == [p.name for p in points[1:]] + ["block:0-2"]
    assert by_target["stage1.block1"]["accuracy_drop"] == 0.0
    assert (by_target["stage1.block1"]["start_layer"], by_target["stage1.block1"]["end_layer"]) == (2, 2)
    assert (by_target["block:0-2"]["start_layer"], by_target["block:0-2"]["end_layer"]) == (0, 2)
    # The structure deletes stage1.block0 and stage1.block1; the latter is a no-op, so it equals block0 alone.
    assert by_target["block:0-2"]["accuracy"] == by_target["stage1.block0"]["accuracy"]
    for r in rows:
        assert r["run_id"] == "r" and 0 <= r["accuracy"] <= 1
        assert r["accuracy_drop"] == pytest.approx(rows[1]["accuracy"] + rows[1]["accuracy_drop"] - r["accuracy"])
    assert not any(b.module.skip_branch for b in blocks)


def test_model_without_skippable_blocks_gives_no_rows(data):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    ctx = RunContext("r", model, data, [], torch.device("cpu"), epoch=1)
    assert _RUN_ANALYSES["ablation"](ctx, {}) == {"ablations": []}


def test_glob_probe_points_map_to_their_blocks(data):
    model = model_for(data, depth=8)
    points = probe_points(model, ["stages.*.relu2", "stages.1.0.conv1"])
    blocks = skippable_blocks(model, points)
    assert [(b.name, b.layers) for b in blocks] == [("stages.0.0", [0]), ("stages.1.0", [1, 2]), ("stages.2.0", [3])]


class Unchained(torch.nn.Module):
    """Two skippable blocks with an operation between them: a deletion cannot restart mid-way."""

    def __init__(self):
        super().__init__()
        from benchsuite.models.cifar_resnet import BasicBlock
        torch.manual_seed(0)
        self.stem = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.block0, self.block1 = BasicBlock(8, 8, 1), BasicBlock(8, 8, 1)
        self.head = torch.nn.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        h = self.block1(self.block0(self.stem(x)) * 0.5)
        return self.head(h.flatten(1))


@pytest.mark.parametrize("kind", ["chained", "unchained"])
def test_deletions_restarting_mid_model_give_the_whole_forward_pass_accuracies(data, kind):
    from benchsuite.train import evaluate

    model = model_for(data, depth=20) if kind == "chained" else Unchained().eval()
    points = probe_points(model) if kind == "chained" else []
    blocks = skippable_blocks(model, points)
    deletions = [[b] for b in blocks] + [blocks[1:3], [blocks[0], blocks[-1]]]
    loader = data.eval_loader("cpu")
    calls = []  # of the first block's first convolution: its computation, not its bypass
    hook = blocks[0].module.conv1.register_forward_pre_hook(lambda m, args: calls.append(1))
    intact, accuracies = ablation.deletion_accuracies(model, blocks, list(reversed(deletions)), loader)
    hook.remove()
    assert intact == evaluate(model, loader, None)[1]
    for d, acc in zip(reversed(deletions), accuracies):
        with skipped(d):
            assert acc == evaluate(model, loader, None)[1]  # bit for bit: the same arithmetic
    assert len({*accuracies, intact}) > 2  # the deletions differ, so a mix-up would show
    batches = len(loader)
    # restarting, the first block runs in the intact pass and once to give the second its input; otherwise
    # in the intact pass and in every deletion that keeps it
    keeps_first = sum(blocks[0] not in d for d in deletions)
    assert len(calls) == (2 if kind == "chained" else 1 + keeps_first) * batches
    assert not any(b.module.skip_branch for b in blocks) and all("forward" not in vars(b.module) for b in blocks)
