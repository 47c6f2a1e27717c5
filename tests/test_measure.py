"""The measurement engine against independent float64 references."""

import numpy as np
import pytest
import torch
import torch.nn as nn

from benchsuite.data.loader import DeviceLoader
from benchsuite.measure import FeatureCapture, MinibatchCKA, centred_gram, measure_models
from benchsuite.models import ProbePoint, create_model, probe_points
from reference import minibatch_cka, pc1_fraction


def offset_features(n: int, d: int, seed: int) -> np.ndarray:
    """ReLU features with large positive means: the case where the expanded float32 formula fails."""
    rng = np.random.default_rng(seed)
    return np.maximum(rng.standard_normal((n, d)) * rng.uniform(0.5, 2, d) + rng.uniform(0, 50, d), 0).astype(np.float32)


@pytest.mark.parametrize("n,d,batch", [(4, 1, 4), (7, 3, 4), (50, 1, 16), (333, 50, 64), (512, 2000, 200), (512, 50_000, 256)])
def test_cka_within_1e5_of_float64(n, d, batch):
    x = offset_features(n, d, 0)
    y = x * 0.5 + offset_features(n, d, 1)
    acc = MinibatchCKA()
    for i in range(0, n, batch):  # the last batch is smaller whenever batch does not divide n
        acc.update([torch.from_numpy(x[i:i + batch]), torch.from_numpy(y[i:i + batch])])
    splits = list(range(batch, n, batch))
    bx = [b for b in np.split(x, splits) if len(b) > 3]
    by = [b for b in np.split(y, splits) if len(b) > 3]
    assert abs(float(acc.compute()[0, 1]) - minibatch_cka(bx, by)) <= 1e-5


def test_merge_of_disjoint_batches_equals_one_pass():
    x = torch.from_numpy(offset_features(300, 40, 2))
    y = torch.from_numpy(offset_features(300, 10, 3)) + x[:, :10]
    whole, left, right = MinibatchCKA(), MinibatchCKA(), MinibatchCKA()
    for i, (bx, by) in enumerate(zip(x.split(64), y.split(64))):
        whole.update([bx, by])
        (left if i % 2 else right).update([bx, by])
    merged = left.merge(right)
    assert torch.allclose(merged.compute(), whole.compute(), rtol=0, atol=1e-12)
    assert merged.examples == whole.examples == 300 and merged.batches == whole.batches


def test_bf16_activations_accepted():
    x = torch.from_numpy(offset_features(64, 30, 4)).bfloat16()
    a, b = MinibatchCKA(), MinibatchCKA()
    a.update([x, x[:, :10]])
    b.update([x.float(), x[:, :10].float()])
    assert torch.allclose(a.compute(), b.compute(), atol=1e-12)


def test_family_pass_matches_reference_within_cross_and_after_pc1_removal():
    torch.manual_seed(0)
    models = [create_model("cifar_resnet", depth=8, in_chans=1), create_model("cifar_resnet", depth=14, width=2, in_chans=1)]
    x = torch.rand(230, 1, 8, 8)
    loader = DeviceLoader(x, torch.zeros(230, dtype=torch.long), batch_size=100, mean=(0.5,), std=(0.3,), shuffle=False)
    points = [probe_points(m) for m in models]
    m = measure_models(models, points, loader, pc1_removed=True)
    # Reference features: the same normalised batches, every probe point of both models.
    feats = []
    with torch.no_grad():
        for model, pts in zip(models, points):
            with FeatureCapture(model.eval(), pts) as cap:
                per_batch = []
                for xb, _ in loader.epoch():
                    model(xb)
                    per_batch.append([f.flatten(1).double().numpy() for f in cap.features])
            feats += [[b[i] for b in per_batch] for i in range(len(pts))]
    assert m.offsets == [0, 4, 11] and m.cka.shape == (11, 11)
    for i in (0, 2, 3, 5, 10):
        for j in (1, 3, 4, 9):
            assert abs(m.cka[i, j] - minibatch_cka(feats[i], feats[j])) < 1e-5
    removed = []
    for i, f in enumerate(feats):
        whole = np.concatenate(f)
        assert abs(m.pc1_fraction[i] - pc1_fraction(whole)) < 1e-3
        centred = whole - whole.mean(0)
        u, s, vt = np.linalg.svd(centred, full_matrices=False)
        score = centred @ vt[0]
        assert abs(abs(np.dot(score, m.pc1_scores[i])) / (np.linalg.norm(score) * np.linalg.norm(m.pc1_scores[i])) - 1) < 1e-4
        removed.append(np.split(whole - np.outer(score, vt[0]), [100, 200]))
    for i, j in [(0, 1), (2, 3), (1, 7), (10, 10)]:
        assert abs(m.cka_pc1_removed[i, j] - minibatch_cka(removed[i], removed[j])) < 1e-4
    cos = m.pc1_cosines()
    s = m.pc1_scores
    assert np.isclose(cos[0, 5], np.dot(s[0], s[5]) ** 2 / (np.dot(s[0], s[0]) * np.dot(s[5], s[5])))
    assert np.allclose(np.diag(cos), 1)


def test_grams_made_as_activations_arrive_give_the_same_cka_and_keep_no_activation():
    """FeatureCapture(reduce=centred_gram) + MinibatchCKA.update_grams against the features path and the float64
    reference, on batches of 50, 50, 20 and 3 (skipped); the capture holds only n x n grams, never an activation."""
    torch.manual_seed(0)
    model = create_model("cifar_resnet", depth=14, in_chans=1).eval()
    points = probe_points(model)
    batches = torch.rand(123, 1, 8, 8).split([50, 50, 20, 3])
    plain, streamed, feats = MinibatchCKA(), MinibatchCKA(), []
    with torch.no_grad():
        with FeatureCapture(model, points) as cap:
            for xb in batches:
                model(xb)
                plain.update(cap.features)
                feats.append([f.flatten(1).double().numpy() for f in cap.features])
        with FeatureCapture(model, points, reduce=centred_gram) as cap:
            for xb in batches:
                model(xb)
                kept = [t for calls in cap._slots.values() for reduced in calls for t in reduced.values()]
                assert {tuple(t.shape) for t in kept} == {(len(xb), len(xb))}
                streamed.update_grams(cap.features)
    assert streamed.skipped == plain.skipped == 3 and streamed.examples == 120
    assert torch.equal(streamed.compute(), plain.compute())
    heat = streamed.compute().numpy()
    for i, j in [(0, 1), (2, 5), (6, 6), (0, 6)]:
        assert abs(heat[i, j] - minibatch_cka([b[i] for b in feats[:3]], [b[j] for b in feats[:3]])) < 1e-5


class SharedReLU(nn.Module):
    """Like torchvision's BasicBlock: one ReLU module called twice in a forward."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.relu = nn.Linear(5, 5), nn.Linear(5, 5), nn.ReLU(inplace=True)

    def forward(self, x):
        h = self.relu(self.fc1(x))
        return self.relu(self.fc2(h) + x)


def test_user_module_with_reused_module_and_a_dataloader():
    torch.manual_seed(0)
    model = SharedReLU()
    points = [ProbePoint("first", "relu", 0, call=0), ProbePoint("last", "relu", 0)]
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(40, 5)), batch_size=20)
    acc = MinibatchCKA()
    with FeatureCapture(model, points) as cap, torch.no_grad():
        for (xb,) in data:
            out = model(xb)
            first, last = cap.features
            assert torch.equal(first, torch.relu(model.fc1(xb))) and torch.equal(last, out)
            acc.update(cap.features)
    assert acc.examples == 40 and 0 < float(acc.compute()[0, 1]) < 1
