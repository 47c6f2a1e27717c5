from collections import Counter

import pytest
import torch

from benchsuite.data.subsets import balanced_split, balanced_subset, eval_order, with_label_noise
from benchsuite.errors import BenchError


def _labels(per_class=(30, 30, 30, 30), seed=0):
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(per_class)])
    return y[torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))]


@pytest.mark.parametrize("size", [10, 40, 100, 0.25])
def test_subset_is_class_balanced(size):
    y = _labels()
    idx = balanced_subset(y, size, seed=0)
    count = size if isinstance(size, int) else round(size * len(y))
    assert len(idx) == len(set(idx.tolist())) == count
    per_class = Counter(y[idx].tolist())
    assert max(per_class.values()) - min(per_class.values()) <= 1
    assert torch.equal(idx, idx.sort().values)


def test_small_classes_give_their_all_and_the_rest_is_spread():
    y = _labels(per_class=(5, 40, 40, 40))
    per_class = Counter(y[balanced_subset(y, 65, seed=1)].tolist())
    assert per_class == {0: 5, 1: 20, 2: 20, 3: 20}


def test_same_seed_same_subset_other_seed_other_subset():
    y = _labels()
    a = balanced_subset(y, 40, seed=3)
    assert torch.equal(a, balanced_subset(y.clone(), 40, seed=3))
    others = [balanced_subset(y, 40, seed=s) for s in range(4, 9)]
    assert all(not torch.equal(a, o) for o in others)


def test_none_is_everything_and_impossible_sizes_are_user_errors():
    y = _labels()
    assert torch.equal(balanced_subset(y, None, seed=0), torch.arange(len(y)))
    for bad in (0, len(y) + 1, 1.5):
        with pytest.raises(BenchError, match="not possible"):
            balanced_subset(y, bad, seed=0)


def test_split_is_disjoint_covering_and_balanced():
    y = _labels()
    train, test = balanced_split(y, test_fraction=0.25, seed=0)
    assert sorted(torch.cat([train, test]).tolist()) == list(range(len(y)))
    assert len(test) == 30 and set(Counter(y[test].tolist()).values()) <= {7, 8}


def test_eval_order_is_fixed_and_balanced():
    y = _labels()
    a = eval_order(y, 20)
    assert torch.equal(a, eval_order(y, 20))
    assert set(Counter(y[a].tolist()).values()) == {5}
    assert torch.equal(eval_order(y, None), torch.arange(len(y)))


def test_label_noise_changes_exactly_the_fraction_to_other_classes():
    y = _labels()
    noisy = with_label_noise(y, 0.25, seed=0, num_classes=4)
    changed = noisy != y
    assert int(changed.sum()) == 30
    assert noisy.dtype == y.dtype and noisy.min() >= 0 and noisy.max() < 4
    assert torch.equal(y, _labels())  # input untouched
    assert torch.equal(noisy, with_label_noise(y, 0.25, seed=0, num_classes=4))
    assert not torch.equal(noisy, with_label_noise(y, 0.25, seed=1, num_classes=4))
    # Wrong labels are spread over the other classes rather than shifted to one of them.
    assert len(set((noisy[changed] - y[changed]).remainder(4).tolist())) == 3


def test_label_noise_edge_cases():
    y = _labels()
    assert torch.equal(with_label_noise(y, 0.0, seed=0, num_classes=4), y)
    assert bool((with_label_noise(y, 1.0, seed=0, num_classes=4) != y).all())
    with pytest.raises(BenchError, match=r"in \[0, 1\]"):
        with_label_noise(y, 1.2, seed=0, num_classes=4)
