"""Linear CKA: a full-batch function and the streaming minibatch estimator of Nguyen et al.

The minibatch estimator (Nguyen, Raghu, Kornblith 2021, eq. 2) averages unbiased HSIC_1
(Song et al. 2012) over batches: per batch, U-centre each probe point's linear Gram matrix
and accumulate S += G G^T / (n (n - 3)) in float64, where G stacks the flattened grams.
CKA_ij = S_ij / sqrt(S_ii S_jj).

Features are mean-centred over the batch before the Gram: U-centring is invariant to
adding a constant vector to every example, and centring first avoids the cancellation
that costs float32 ~1e-2 of accuracy on ReLU features with large means.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def _as_tensor(x) -> torch.Tensor:
    return torch.from_numpy(np.asarray(x)) if not isinstance(x, torch.Tensor) else x


_CHUNK = 1 << 20  # elements centred at a time on a CPU (4 MiB of float32): no centred copy of x, long products
_MIN_COLUMNS = 1024  # with many examples, blocks stay this wide: each block's products update all of K
_ROW_BLOCKS = 4  # K is symmetric: each block of rows times the columns from its own on is 5/8 of x @ x.T


def gram(x: torch.Tensor) -> torch.Tensor:
    """Linear Gram matrix of a batch (n, ...) after centring its features over the batch."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        x = x.permute(0, 2, 3, 1)  # the order of features does not change a gram: no copy of a channels-last batch
    x = x.detach().flatten(1)
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    n, d = x.shape
    with torch.autocast(x.device.type, enabled=False):  # also inside an autocast forward pass (hooks)
        # The mean as a GEMV is one pass over x (x.mean(0) strides); any shift is exact under U-centring.
        mean = x.new_full((1, n), 1.0 / n) @ x
        step = max(_MIN_COLUMNS, _CHUNK // n) if x.device.type == "cpu" else max(d, 1)
        block, k = x.new_empty(n, min(step, d)), x.new_zeros(n, n)
        rows = sorted({n * i // _ROW_BLOCKS for i in range(_ROW_BLOCKS + 1)})
        # A block of columns centred at a time, so there is no centred copy of x to allocate and page in; only
        # the blocks on and above K's diagonal are multiplied, then mirrored.
        for s in range(0, d, step):
            c = torch.sub(x[:, s:s + step], mean[:, s:s + step], out=block[:, :min(step, d - s)])
            for a, b in zip(rows, rows[1:]):
                k[a:b, a:].addmm_(c[a:b], c[a:].T)
        for a, b in zip(rows, rows[1:]):
            k[b:, a:b] = k[a:b, b:].T
    return k


def u_centre(k: torch.Tensor) -> torch.Tensor:
    """U-centred Gram matrix (Song et al. 2012), so <K~, L~> / (n (n - 3)) is HSIC_1. Float64."""
    n = k.shape[-1]
    k = k.to(torch.float64, copy=True)
    k.diagonal(dim1=-2, dim2=-1).zero_()
    row = k.sum(dim=-1, keepdim=True) / (n - 2)
    total = k.sum(dim=(-2, -1), keepdim=True) / ((n - 1) * (n - 2))
    k = k - row - row.transpose(-2, -1) + total
    k.diagonal(dim1=-2, dim2=-1).zero_()
    return k


def centred_gram(x: torch.Tensor) -> torch.Tensor:
    """A batch's U-centred linear Gram matrix, (n, n) float64: what MinibatchCKA.update_grams takes."""
    return u_centre(gram(x))


def linear_cka(x, y, debiased: bool = False) -> float:
    """Linear CKA between two full batches of features (n, ...), NumPy or torch, in float64.

    `debiased=False` is Kornblith et al. 2019's CKA (biased HSIC); `debiased=True` uses the
    unbiased HSIC_1 estimator, as the minibatch estimator does per batch.
    """
    x = _as_tensor(x).detach().flatten(1).to(torch.float64)
    y = _as_tensor(y).detach().flatten(1).to(torch.float64)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y need the same number of examples, got {x.shape[0]} and {y.shape[0]}")
    if debiased:
        if x.shape[0] <= 3:
            raise ValueError("debiased CKA needs at least 4 examples")
        k, l = u_centre(gram(x)), u_centre(gram(y))
    else:
        k, l = gram(x), gram(y)  # centred features give H K H directly
    hsic_xy = (k * l).sum()
    return float(hsic_xy / torch.sqrt((k * k).sum() * (l * l).sum()))


class MinibatchCKA:
    """Streaming CKA between every pair of P probe points (of one or many models).

    `update(features)` takes one batch's activations of every probe point, in a fixed order;
    `compute()` returns the (P, P) CKA matrix; `merge(other)` adds a state built on other
    batches (other workers or devices), which is exact because the state is a plain sum.
    Batches of n <= 3, where HSIC_1 is undefined, are skipped and counted in `skipped`.
    """

    def __init__(self, device: torch.device | str | None = None):
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.hsic: torch.Tensor | None = None  # sum over batches of HSIC_1, (P, P) float64
        self.batches = 0
        self.examples = 0
        self.skipped = 0

    def update(self, features: Sequence[torch.Tensor]) -> None:
        n = features[0].shape[0]
        if any(f.shape[0] != n for f in features):
            raise ValueError("every probe point of a batch must have the same number of examples")
        if n <= 3:
            self.skipped += n
            return
        self.update_grams([centred_gram(f) for f in features])

    def update_grams(self, grams: Sequence[torch.Tensor]) -> None:
        """`update` from each probe point's `centred_gram` (made, e.g., by FeatureCapture(reduce=centred_gram)
        as each activation arrives, so that a batch's activations are never all held at once)."""
        n = grams[0].shape[0]
        if n <= 3:
            self.skipped += n
            return
        grams = torch.stack(list(grams)).flatten(1)
        batch_hsic = (grams @ grams.T) / (n * (n - 3))
        batch_hsic = (batch_hsic + batch_hsic.T) / 2  # BLAS does not promise an exactly symmetric G G^T
        if self.device is not None:
            batch_hsic = batch_hsic.to(self.device)
        self.hsic = batch_hsic if self.hsic is None else self.hsic + batch_hsic.to(self.hsic.device)
        self.batches += 1
        self.examples += n

    def merge(self, other: "MinibatchCKA") -> "MinibatchCKA":
        if other.hsic is not None:
            self.hsic = other.hsic.clone() if self.hsic is None else self.hsic + other.hsic.to(self.hsic.device)
        self.batches += other.batches
        self.examples += other.examples
        self.skipped += other.skipped
        return self

    def compute(self) -> torch.Tensor:
        if self.hsic is None:
            raise RuntimeError("MinibatchCKA.compute() called before any batch of more than 3 examples")
        d = torch.sqrt(torch.diagonal(self.hsic).clamp_min(0))
        return self.hsic / torch.outer(d, d)
