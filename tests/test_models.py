"""Generated from the family registry: every family builds, trains a step and yields its probe points."""

import pytest
import torch

from benchsuite.measure import FeatureCapture
from benchsuite.models import create_model, get_family, list_families, probe_points


def small_params(family: str) -> dict:
    """The smallest valid parameters of a family: its params model's `smallest()` where it has one,
    else its defaults, shrunk where it declares a `depth`."""
    params = get_family(family).params
    if hasattr(params, "smallest"):
        return params.smallest()
    return {"depth": 8} if "depth" in params.model_fields and family == "cifar_resnet" else {}


@pytest.mark.parametrize("family", list_families())
def test_family_builds_trains_and_probes(family):
    torch.manual_seed(0)
    model = create_model(family, num_classes=5, in_chans=1, image_size=8, **small_params(family))
    x, y = torch.randn(6, 1, 8, 8), torch.randint(0, 5, (6,))
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    points = probe_points(model)
    assert points and len({p.name for p in points}) == len(points)
    assert [p.stage for p in points] == sorted(p.stage for p in points)
    with FeatureCapture(model, points) as cap:
        model.eval()(x)
    assert [f.shape[0] for f in cap.features] == [6] * len(points)


@pytest.mark.parametrize("depth,blocks", [(8, 3), (20, 9), (56, 27), (110, 54)])
def test_cifar_resnet_shape(depth, blocks):
    model = create_model("cifar_resnet", depth=depth, width=2, num_classes=100, in_chans=3)
    points = probe_points(model)
    assert len(points) == blocks + 1 and points[0].name == "stem"
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) + 1 == depth  # 6n+2 = 3x3 convs + the linear head
    assert model.head.in_features == 128
    if depth == 56:
        assert sum(p.numel() for p in create_model("cifar_resnet", depth=56).parameters()) == 855_770  # 0.85M, He et al.


def test_capture_clones_outputs_of_inplace_relu():
    model = create_model("cifar_resnet", depth=8, in_chans=1).eval()
    points = probe_points(model, ["stages.0.0.bn1", "stages.0.0.relu1"])
    with FeatureCapture(model, points) as cap:
        model(torch.randn(4, 1, 8, 8))
    bn, relu = cap.features
    assert (bn < 0).any() and torch.equal(relu, bn.clamp_min(0))


def test_probe_selection_all_and_globs():
    model = create_model("cifar_resnet", depth=8, in_chans=1)
    every = probe_points(model, "all")
    kinds = {type(model.get_submodule(p.module)).__name__ for p in every}
    assert {"Conv2d", "BatchNorm2d", "ReLU", "Add"} <= kinds
    adds = probe_points(model, ["stages.*.add"])
    assert [p.stage for p in adds] == [1, 2, 3]


def test_zero_init_residual_starts_every_block_as_its_shortcut(workdir, cli):
    from types import SimpleNamespace

    from benchsuite.runner.jobs import build_model
    from benchsuite.spec import canonical_json, expand, parse_spec, run_id
    from conftest import TINY_SPEC

    plain = expand(parse_spec(TINY_SPEC))[0]
    zeroed = expand(parse_spec(TINY_SPEC.replace("lr: 0.05", "lr: 0.05, zero_init_residual: true")))[0]
    # Runs stored before the option existed keep their ids: the default is left out of the hash.
    assert "zero_init_residual" not in canonical_json(plain) and run_id(zeroed) != run_id(plain)
    assert '"zero_init_residual":true' in canonical_json(zeroed)

    data = SimpleNamespace(num_classes=10, in_chans=1, image_size=8)
    model = build_model(SimpleNamespace(config=zeroed), data).eval()
    assert all(not b.bn2.weight.any() for b in model.modules() if hasattr(b, "bn2"))
    x = torch.randn(5, 1, 8, 8)
    h = model.stem(x)  # after a ReLU, so the first block (identity shortcut) returns it unchanged
    assert torch.equal(model.stages[0][0](h), h)
    assert build_model(SimpleNamespace(config=plain), data).stages[0][0].bn2.weight.all()

    (workdir / "vit.yaml").write_text("name: v\nfamily: {name: vit, grid: {depth: [2]}}\ntrain: {zero_init_residual: true}\n")
    result = cli("validate", "vit.yaml")
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "vit.yaml: train.zero_init_residual: family vit has no residual branches to zero" in result.stderr
