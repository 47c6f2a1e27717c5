"""The datasets that ship with benchsuite; importing this module registers them."""

import numpy as np
import torch

from benchsuite.data.registry import ImageData, register_dataset
from benchsuite.data.subsets import balanced_split


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of images (N, C, H, W), for normalisation."""
    mean = x.mean(dim=(0, 2, 3)).tolist()
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-6).tolist()
    return tuple(mean), tuple(std)


@register_dataset("digits", "scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes), embedded")
def load_digits(root) -> ImageData:
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = torch.from_numpy((bunch.images / 16.0).astype(np.float32)).unsqueeze(1)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    # No official test split: a fixed class-balanced 30% holds out the evaluation pool.
    train_idx, test_idx = balanced_split(y, test_fraction=0.3, seed=0)
    mean, std = channel_stats(x[train_idx])
    return ImageData(
        name="digits",
        train_x=x[train_idx], train_y=y[train_idx],
        test_x=x[test_idx], test_y=y[test_idx],
        classes=[str(i) for i in range(10)], mean=mean, std=std, source="scikit-learn (embedded)",
    )


# The other datasets live in their own modules and import channel_stats from here, so they come last.
from benchsuite.data import cifar, fashion_mnist, synthetic  # noqa: F401
