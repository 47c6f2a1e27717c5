"""Class-balanced, seeded selection of training subsets and evaluation sets."""

from __future__ import annotations

import torch

from benchsuite.errors import BenchError


def _per_class(labels: torch.Tensor, seed: int) -> list[torch.Tensor]:
    """Indices of each class, each in a seeded random order."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        out.append(idx[torch.randperm(len(idx), generator=g)])
    return out


def _quotas(sizes: list[int], total: int) -> list[int]:
    """Split `total` over classes as evenly as their sizes allow (largest remainder first)."""
    k = len(sizes)
    quotas = [0] * k
    remaining = total
    open_ = [i for i in range(k) if sizes[i] > 0]
    while remaining > 0 and open_:
        share, extra = divmod(remaining, len(open_))
        for rank, i in enumerate(list(open_)):
            take = min(sizes[i] - quotas[i], share + (1 if rank < extra else 0))
            quotas[i] += take
            remaining -= take
        open_ = [i for i in open_ if quotas[i] < sizes[i]]
    return quotas


def balanced_subset(labels: torch.Tensor, size: int | float | None, seed: int) -> torch.Tensor:
    """Sorted indices of a class-balanced subset: `size` examples (int) or a fraction (float).

    The same (labels, size, seed) always gives the same subset; different seeds give different ones.
    """
    n = len(labels)
    if size is None:
        return torch.arange(n)
    count = round(size * n) if isinstance(size, float) else int(size)
    if not 0 < count <= n:
        raise BenchError(f"subset of {size} examples is not possible: the split has {n}")
    groups = _per_class(labels, seed)
    quotas = _quotas([len(g) for g in groups], count)
    return torch.sort(torch.cat([g[:q] for g, q in zip(groups, quotas)])).values


def balanced_split(labels: torch.Tensor, test_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic class-balanced split into (train, test) index tensors."""
    test = balanced_subset(labels, test_fraction, seed)
    mask = torch.ones(len(labels), dtype=torch.bool)
    mask[test] = False
    return torch.nonzero(mask).flatten(), test


def eval_order(labels: torch.Tensor, size: int | None) -> torch.Tensor:
    """The fixed, ordered evaluation set: a class-balanced prefix, the same for every model."""
    return balanced_subset(labels, size, seed=0) if size and size < len(labels) else torch.arange(len(labels))


def with_label_noise(labels: torch.Tensor, fraction: float, seed: int, num_classes: int) -> torch.Tensor:
    """A copy of `labels` where exactly round(fraction * n) seeded examples get another class, drawn uniformly."""
    if not 0 <= fraction <= 1:
        raise BenchError(f"label noise fraction must be in [0, 1], got {fraction}")
    count = round(fraction * len(labels))
    noisy = labels.clone()
    if count == 0:
        return noisy
    if num_classes < 2:
        raise BenchError("label noise needs at least 2 classes")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(labels), generator=g)[:count]
    # A non-zero offset modulo num_classes always lands on a different class, each equally likely.
    offset = torch.randint(1, num_classes, (count,), generator=g, dtype=labels.dtype)
    noisy[idx] = (labels[idx] + offset) % num_classes
    return noisy
