import numpy as np
import pytest
import torch

from benchsuite.measure import MinibatchCKA, gram, linear_cka
from benchsuite.measure.cka import _CHUNK
from reference import minibatch_cka


def relu_features(rng, n, d, offset):
    """ReLU-like features with large positive means, where the expanded float32 formula fails."""
    return np.maximum(rng.standard_normal((n, d)) + offset, 0).astype(np.float32)


def test_kornblith_notebook_example():
    np.random.seed(1337)
    x = np.random.randn(100, 10)
    y = np.random.randn(100, 10) + x
    assert linear_cka(x, y) == pytest.approx(0.55761, abs=5e-6)
    assert linear_cka(x, y, debiased=True) == pytest.approx(0.51346, abs=5e-6)
    assert linear_cka(torch.from_numpy(x), torch.from_numpy(y)) == pytest.approx(linear_cka(x, y), abs=1e-12)


@pytest.mark.parametrize("sizes", [[64, 64, 37], [100, 17], [4, 5, 6]])
def test_minibatch_matches_float64_reference(sizes):
    rng = np.random.default_rng(0)
    n = sum(sizes)
    a = relu_features(rng, n, 300, offset=5.0)
    b = a[:, :200] * 2 + relu_features(rng, n, 200, offset=3.0)
    c = relu_features(rng, n, 7, offset=50.0)
    acc = MinibatchCKA()
    start = 0
    for size in sizes:
        acc.update([torch.from_numpy(f[start:start + size]) for f in (a, b, c)])
        start += size
    got = acc.compute().numpy()
    splits = np.cumsum(sizes)[:-1]
    feats = [np.split(f, splits) for f in (a, b, c)]
    for i in range(3):
        for j in range(3):
            assert abs(got[i, j] - minibatch_cka(feats[i], feats[j])) < 1e-6
    assert np.allclose(np.diag(got), 1.0, atol=1e-12)
    assert np.array_equal(got, got.T)


def test_batches_of_three_or_fewer_are_skipped_not_divided_by_zero():
    rng = np.random.default_rng(1)
    x = torch.from_numpy(relu_features(rng, 40, 10, 1.0))
    acc = MinibatchCKA()
    acc.update([x[:37], x[:37]])
    acc.update([x[37:], x[37:]])  # 3 examples: undefined for HSIC_1
    assert acc.skipped == 3 and acc.batches == 1
    assert torch.isfinite(acc.compute()).all()
    with pytest.raises(RuntimeError):
        MinibatchCKA().compute()


def test_update_does_not_modify_inputs():
    x = torch.rand(20, 5) + 3
    before = x.clone()
    MinibatchCKA().update([x, x * 2])
    assert torch.equal(x, before)


@pytest.mark.parametrize("n", [4, 5, 7, 129])
def test_gram_is_the_centred_gram_and_exactly_symmetric(n):
    # gram centres _CHUNK // n columns at a time (here two blocks and a ragged one), multiplies only the blocks
    # of rows on and above the diagonal (four of them, some empty when n < 4 * 2), and mirrors the rest
    d = 2 * (_CHUNK // n) + 37
    x = relu_features(np.random.default_rng(n), n, d, offset=5.0)
    xc = x.astype(np.float64) - x.astype(np.float64).mean(axis=0)
    got = gram(torch.from_numpy(x))
    assert torch.equal(got, got.T)
    ref = xc @ xc.T
    assert np.abs(got.double().numpy() - ref).max() < 1e-5 * np.abs(ref).max()


def test_gram_of_a_channels_last_batch():
    # (n, C, H, W) stored channels-last is read as the (n, H, W, C) view: other feature order, same gram
    x = relu_features(np.random.default_rng(7), 40, 16 * 9 * 9, offset=3.0).reshape(40, 16, 9, 9)
    xc = x.reshape(40, -1).astype(np.float64) - x.reshape(40, -1).astype(np.float64).mean(axis=0)
    ref = xc @ xc.T
    got = gram(torch.from_numpy(x).contiguous(memory_format=torch.channels_last))
    assert np.abs(got.double().numpy() - ref).max() < 1e-5 * np.abs(ref).max()


def test_gram_is_full_precision_inside_autocast():
    # FeatureCapture(reduce=centred_gram) calls it inside the forward pass, under the caller's autocast
    x = torch.from_numpy(relu_features(np.random.default_rng(3), 64, 3000, offset=4.0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = gram(x)
    assert inside.dtype == torch.float32 and torch.equal(inside, gram(x))
