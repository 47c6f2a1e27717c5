import pytest
import torch
import torch.nn.functional as F

from benchsuite.data.loader import DeviceLoader
from benchsuite.errors import BenchError

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def _data(n=50, shape=(3, 8, 8), seed=0):
    # Labels are the example's index, so every batch says which images it holds.
    x = torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed))
    return x, torch.arange(n)


def _normalised(x):
    return (x - torch.tensor(MEAN).view(1, -1, 1, 1)) / torch.tensor(STD).view(1, -1, 1, 1)


def _collect(loader, seed):
    xs, ys = zip(*loader.epoch(torch.Generator().manual_seed(seed)))
    return torch.cat(xs), torch.cat(ys)


@pytest.mark.parametrize("augment", ["none", "flip_crop"])
@pytest.mark.parametrize("drop_last", [False, True])
def test_every_example_once_per_epoch(augment, drop_last):
    x, y = _data(n=50)
    loader = DeviceLoader(x, y, batch_size=16, mean=MEAN, std=STD, augment=augment, drop_last=drop_last)
    batches = list(loader.epoch(torch.Generator().manual_seed(3)))
    assert len(batches) == len(loader) == (3 if drop_last else 4)
    assert [len(b[1]) for b in batches] == ([16] * 3 if drop_last else [16, 16, 16, 2])
    seen = torch.cat([b[1] for b in batches])
    assert len(set(seen.tolist())) == len(seen)
    if not drop_last:
        assert sorted(seen.tolist()) == list(range(50))
    assert not torch.equal(seen, torch.arange(len(seen)))  # shuffled


def test_no_augment_no_shuffle_is_the_normalised_data_in_order():
    x, y = _data(n=20)
    loader = DeviceLoader(x, y, batch_size=8, mean=MEAN, std=STD, shuffle=False)
    xs, ys = _collect(loader, seed=0)
    assert torch.equal(ys, y)
    assert torch.allclose(xs, _normalised(x), atol=1e-6)


def _windows(padded, size):
    """Every (dy, dx, flipped) crop of one padded image."""
    span = padded.shape[-1] - size + 1
    out = {}
    for dy in range(span):
        for dx in range(span):
            w = padded[:, dy:dy + size, dx:dx + size]
            out[dy, dx, False], out[dy, dx, True] = w, w.flip(-1)
    return out


@pytest.mark.parametrize("size", [8, 32])
def test_flip_crop_is_a_window_of_the_reflect_padded_image_maybe_mirrored(size):
    n = 200 if size == 8 else 16
    x, y = _data(n=n, shape=(3, size, size))
    loader = DeviceLoader(x, y, batch_size=64, mean=MEAN, std=STD, augment="flip_crop")
    assert loader.pad == {8: 1, 32: 4}[size]
    xs, ys = _collect(loader, seed=1)
    p = loader.pad
    padded = F.pad(_normalised(x), (p, p, p, p), mode="reflect")
    used = set()
    for out, i in zip(xs, ys.tolist()):
        matches = {k for k, w in _windows(padded[i], size).items() if torch.equal(out, w)}
        assert matches, f"example {i} is not a shifted/flipped window of its padded image"
        used |= matches
    if size == 8:  # 200 draws over 18 cases: every shift and both orientations occur
        assert {(dy, dx) for dy, dx, _ in used} == {(a, b) for a in range(3) for b in range(3)}
        assert {f for *_, f in used} == {False, True}


def test_epoch_is_a_pure_function_of_the_generator_seed():
    x, y = _data(n=64)
    loader = DeviceLoader(x, y, batch_size=16, mean=MEAN, std=STD, augment="flip_crop")
    a = _collect(loader, seed=7)
    torch.manual_seed(123)  # the global RNG plays no part
    b = _collect(loader, seed=7)
    c = _collect(loader, seed=8)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    # A fresh loader on the same data gives the same epoch: resuming from a checkpoint is exact.
    fresh = DeviceLoader(x.clone(), y.clone(), batch_size=16, mean=MEAN, std=STD, augment="flip_crop")
    d = _collect(fresh, seed=7)
    assert torch.equal(a[0], d[0])


def test_uint8_input_is_normalised_like_float():
    raw = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8)
    loader = DeviceLoader(raw, torch.arange(10), batch_size=10, mean=(100.0,) * 3, std=(50.0,) * 3,
                          shuffle=False)
    xs, _ = _collect(loader, seed=0)
    assert xs.dtype == torch.float32
    assert torch.allclose(xs, (raw.float() - 100) / 50)


def test_channels_last_on_request_keeps_values():
    x, y = _data(n=12)
    plain = DeviceLoader(x, y, batch_size=4, mean=MEAN, std=STD, augment="flip_crop")
    assert not plain.channels_last  # the default on CPU
    cl = DeviceLoader(x, y, batch_size=4, mean=MEAN, std=STD, augment="flip_crop", channels_last=True)
    for (xa, ya), (xb, yb) in zip(plain.epoch(torch.Generator().manual_seed(0)),
                                  cl.epoch(torch.Generator().manual_seed(0))):
        assert xb.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_unknown_augmentation_is_a_user_error():
    x, y = _data(n=4)
    with pytest.raises(BenchError, match="unknown augmentation 'cutout'"):
        DeviceLoader(x, y, batch_size=2, mean=MEAN, std=STD, augment="cutout")
