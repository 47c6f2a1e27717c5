import torch

from benchsuite.data import dataset_info, load_dataset
from benchsuite.data.synthetic import make_synthetic


def _nearest_mean_accuracy(ds) -> float:
    means = torch.stack([ds.train_x[ds.train_y == k].mean(0) for k in range(ds.num_classes)]).flatten(1)
    pred = torch.cdist(ds.test_x.flatten(1), means).argmin(1)
    return (pred == ds.test_y).float().mean().item()


def test_registered_default_is_small_deterministic_and_balanced(tmp_path):
    ds = load_dataset("synthetic", tmp_path)
    assert ds.train_x.shape == (2000, 3, 16, 16) and ds.test_x.shape == (500, 3, 16, 16)
    assert ds.num_classes == 10 and ds.train_y.dtype == torch.int64
    assert torch.bincount(ds.train_y).tolist() == [200] * 10
    assert 0 <= ds.train_x.min() and ds.train_x.max() <= 1
    again = make_synthetic()
    assert torch.equal(ds.train_x, again.train_x) and torch.equal(ds.test_y, again.test_y)
    assert dataset_info("synthetic").locate(tmp_path) == "generated"


def test_seed_changes_the_data():
    a, b = make_synthetic(seed=0), make_synthetic(seed=1)
    assert not torch.equal(a.train_x, b.train_x)


def test_noise_controls_difficulty():
    accs = [_nearest_mean_accuracy(make_synthetic(noise=noise)) for noise in (0.2, 0.8, 1.5)]
    assert accs[0] == 1.0
    assert accs[0] >= accs[1] > accs[2] > 0.3  # harder, yet well above chance (0.1)


def test_prototypes_survive_flips_and_shapes_are_configurable():
    ds = make_synthetic(num_classes=4, shape=(1, 8, 8), train_size=40, test_size=8, noise=0.0)
    assert ds.train_x.shape == (40, 1, 8, 8) and ds.num_classes == 4
    # Noise-free images are their own mirror image, so a flip never changes the class evidence.
    assert torch.equal(ds.train_x, ds.train_x.flip(-1))
    assert len(ds.mean) == len(ds.std) == 1
