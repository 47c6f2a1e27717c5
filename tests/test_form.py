"""Models are measured folded and channels-last, and given back exactly as they were."""

import numpy as np
import pytest
import torch
import torch.nn as nn

from benchsuite.measure import FeatureCapture, measure_models
from benchsuite.measure.form import FastForm, conv_bn_pairs
from benchsuite.models import ProbePoint, create_model, probe_points
from reference import minibatch_cka


def trained_like_resnet(depth: int = 20) -> nn.Module:
    """A CIFAR ResNet whose BatchNorms have the non-trivial statistics and affine maps of a trained one."""
    torch.manual_seed(depth)
    model = create_model("cifar_resnet", depth=depth, num_classes=10, in_chans=3)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.3, 3.0)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.3, 0.3)
    return model.eval()


def snapshot(model: nn.Module) -> list:
    return [(name, t, t.detach().clone(), (t.stride(), t.data_ptr()))
            for name, t in [*model.named_parameters(), *model.named_buffers()]]


def assert_given_back(model: nn.Module, before: list) -> None:
    after = snapshot(model)
    assert [name for name, *_ in after] == [name for name, *_ in before]
    for (name, t, value, stride), (_, t2, value2, stride2) in zip(before, after):
        assert t2 is t and stride2 == stride and torch.equal(value2, value), name  # same objects, bits, storage
        assert not t2.is_inference(), name
    assert all("forward" not in vars(m) for m in model.modules() if not isinstance(m, torch.jit.ScriptModule))


def as_given_features(model, points, x, batch):
    feats = [[] for _ in points]
    with torch.no_grad(), FeatureCapture(model, points) as cap:
        for xb in x.split(batch):
            model(xb)
            for f, a in zip(feats, cap.features):
                f.append(a.flatten(1).double().numpy())
    return feats


def test_measured_folded_and_channels_last_within_float32_of_the_model_as_given_then_given_back():
    model = trained_like_resnet()
    points = probe_points(model)
    x = torch.randn(200, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    before = snapshot(model)
    with FastForm([model], [points]) as form:
        form.prepare(0, x)
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        assert form.folded == [sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())] == [len(convs)]
        assert all(c.weight.is_contiguous(memory_format=torch.channels_last) and c.bias is not None for c in convs)
    assert_given_back(model, before)

    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=64)  # any re-iterable
    fast = measure_models([model], [points], loader, pcs=False)
    assert_given_back(model, before)
    given = measure_models([model], [points], loader, pcs=False, as_given=True)
    feats = as_given_features(model, points, x, 64)
    for i in range(len(points)):
        for j in range(len(points)):
            ref = minibatch_cka(feats[i], feats[j])
            assert abs(given.cka[i, j] - ref) < 1e-6
            assert abs(fast.cka[i, j] - ref) < 1e-5
    assert not np.array_equal(fast.cka, given.cka)  # the fast form did run: its rounding differs


def test_a_model_measured_is_still_trainable():
    model = trained_like_resnet(8)
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=0.1)
    x = torch.randn(64, 3, 8, 8)
    with torch.inference_mode():  # as a caller may
        measure_models([model], [probe_points(model)], [x], pcs=False)
    model.train()
    model(x).logsumexp(1).mean().backward()
    opt.step()
    assert all(p.grad is not None for p in params) and list(model.parameters()) == params


class TwoUses(nn.Module):
    """The convolution's output feeds its BatchNorm and, beside it, the sum: folding would change the sum."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.out = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Identity()
        self.conv2, self.bn2, self.out2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Identity()

    def forward(self, x):
        c = self.conv(x)
        y = self.out(self.bn(c) + c)
        return self.out2(self.bn2(self.conv2(y)))


class TwoNorms(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.bn2 = nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.BatchNorm2d(8)

    def forward(self, x):
        c = self.conv(x)
        return self.bn(c) + self.bn2(c)


def test_a_convolution_read_by_two_batchnorms_pairs_with_the_first_only():
    model = TwoNorms().eval()
    assert conv_bn_pairs(model, torch.randn(2, 3, 8, 8), set()) == [(model.conv, model.bn)]


def test_a_fold_that_would_change_a_probe_point_is_undone():
    torch.manual_seed(0)
    model = TwoUses().eval()
    for bn in (model.bn, model.bn2):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    points = [ProbePoint("out", "out", 0), ProbePoint("out2", "out2", 0)]
    before = snapshot(model)
    x = torch.randn(16, 3, 8, 8)
    assert len(conv_bn_pairs(model, x, {"out", "out2"})) == 2  # both pairs are found ...
    with FastForm([model], [points]) as form:
        form.prepare(0, x)
        assert form.folded == [0] and "forward" not in vars(model.bn)  # ... and the checked fold is undone
    assert_given_back(model, before)


def test_probe_points_and_hooked_modules_are_not_folded():
    model = trained_like_resnet(8)
    first_conv = next(name for name, m in model.named_modules() if isinstance(m, nn.Conv2d))
    points = probe_points(model) + [ProbePoint(first_conv, first_conv, 0)]
    bn = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)][1]  # not the first conv's
    handle = bn.register_forward_hook(lambda *a: None)
    try:
        with FastForm([model], [points]) as form:
            form.prepare(0, torch.randn(8, 3, 8, 8))
            assert 0 < form.folded[0] == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) - 2
            assert model.get_submodule(first_conv).bias is None and "forward" not in vars(bn)
    finally:
        handle.remove()


def test_a_model_listed_twice_is_folded_once_and_matches_itself():
    model = trained_like_resnet(8)
    before = snapshot(model)
    x = torch.randn(64, 3, 8, 8)
    pts = probe_points(model)
    m = measure_models([model, model], [pts, pts], [x[:32], x[32:]], pcs=False)
    assert_given_back(model, before)
    p = len(pts)
    assert np.allclose(m.cka[:p, p:], m.cka[:p, :p], atol=1e-12)
    with FastForm([model, model], [pts, pts]) as form:
        form.prepare(0, x)
        form.prepare(1, x)
        assert form.folded[0] == form.folded[1] > 0
    assert_given_back(model, before)


class Flattens(nn.Module):
    """Breaks when its convolutions run channels-last (a view of a conv output), and mixes 2-d and 3-d
    convolutions; a scripted leaf takes no hooks."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)
        self.conv3 = nn.Conv3d(1, 2, 1)
        self.act = torch.jit.script(nn.ReLU())
        self.out = nn.Identity()

    def forward(self, x):
        y = self.act(self.bn(self.conv(x)))
        z = self.conv3(y.view(y.size(0), -1)[:, None, :, None, None])
        return self.out(z.flatten(1))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_a_model_the_form_would_break_is_measured_as_given():
    torch.manual_seed(0)
    model = Flattens().eval()
    before = snapshot(model)
    x = torch.randn(40, 3, 6, 6)
    points = [ProbePoint("out", "out", 0)]
    fast = measure_models([model], [points], [x[:20], x[20:]], pcs=False)
    given = measure_models([model], [points], [x[:20], x[20:]], pcs=False, as_given=True)
    assert np.array_equal(fast.cka, given.cka)
    assert_given_back(model, before)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_grams_are_full_precision_under_autocast():
    model = trained_like_resnet(8)
    x = torch.randn(64, 3, 8, 8)
    pts = probe_points(model)
    streamed = measure_models([model], [pts], [x[:32], x[32:]], pcs=False, amp=torch.bfloat16)  # grams in hooks
    held = measure_models([model], [pts], [x[:32], x[32:]], pc1_removed=True, amp=torch.bfloat16)  # after
    assert np.abs(streamed.cka - held.cka).max() < 1e-9


def test_a_convolution_shared_by_two_models_is_not_folded_into_either():
    torch.manual_seed(1)
    conv = nn.Conv2d(3, 6, 3)
    norms = [nn.BatchNorm2d(6), nn.BatchNorm2d(6)]
    for bn in norms:
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.3, 3)
    models = [nn.Sequential(conv, bn, nn.ReLU(), nn.Conv2d(6, 4, 3), nn.Identity()).eval() for bn in norms]
    points = [[ProbePoint("4", "4", 0)]] * 2
    x = torch.randn(48, 3, 8, 8)
    fast = measure_models(models, points, [x[:24], x[24:]], pcs=False)
    given = measure_models(models, points, [x[:24], x[24:]], pcs=False, as_given=True)
    assert np.abs(fast.cka - given.cka).max() < 1e-5
