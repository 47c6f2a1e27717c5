"""Device-resident loader: the whole (sub)set lives on the training device as one tensor."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from benchsuite.errors import BenchError

AUGMENTATIONS = ("none", "flip_crop")


def _reflect_index(size: int, pad: int) -> torch.Tensor:
    """Source position of each position of a reflect-padded axis (F.pad mode='reflect': no edge repeat)."""
    u = torch.arange(-pad, size + pad).abs()
    return torch.where(u >= size, 2 * (size - 1) - u, u)


class DeviceLoader:
    """Batches sliced from a per-epoch permutation, augmentation batched on the device.

    `epoch(generator)` draws the order and the augmentation from `generator` alone, so an epoch is
    a pure function of its generator's seed (which makes resuming from a checkpoint exact).

    `flip_crop` is a random crop of the image reflect-padded by `pad` pixels, then a horizontal
    flip with probability 1/2 (torchvision's RandomCrop(padding_mode='reflect') + RandomHorizontalFlip).
    Both are one gather along rows and one along columns of the batch: no padded copy is made.
    """

    def __init__(self, x, y, *, batch_size: int, mean, std, device="cpu", augment: str = "none",
                 shuffle: bool = True, drop_last: bool = False, channels_last: bool | None = None):
        if augment not in AUGMENTATIONS:
            raise BenchError(f"unknown augmentation {augment!r}; known: {', '.join(AUGMENTATIONS)}")
        self.device = torch.device(device)
        # Normalise after the move: uint8 input crosses to the device at a quarter of the float size.
        x = x.to(self.device)
        # The default dtype: float32, unless a caller wants float64 (the stacked-seed equivalence tests).
        mean_t = torch.tensor(mean, device=self.device).view(1, -1, 1, 1)
        std_t = torch.tensor(std, device=self.device).view(1, -1, 1, 1)
        self.x = ((x.to(mean_t.dtype) - mean_t) / std_t).contiguous()
        self.y = y.to(self.device)
        self.batch_size, self.augment, self.shuffle, self.drop_last = batch_size, augment, shuffle, drop_last
        self.channels_last = self.device.type == "cuda" if channels_last is None else channels_last
        _, _, h, w = self.x.shape
        self.pad = max(1, w // 8)  # 4 pixels on 32x32, 1 on 8x8
        if augment == "flip_crop":
            if self.pad >= min(h, w):
                raise BenchError(f"flip_crop needs images larger than {self.pad} pixels, got {h}x{w}")
            shifts = torch.arange(2 * self.pad + 1).view(-1, 1)
            # Row k: the source rows (columns) of the window at shift k; _cols[1] reads windows mirrored.
            rows = _reflect_index(h, self.pad)[shifts + torch.arange(h)]
            cols = _reflect_index(w, self.pad)[shifts + torch.arange(w)]
            self._rows = rows.to(self.device)
            self._cols = torch.stack([cols, cols.flip(-1)]).to(self.device)

    def __len__(self) -> int:
        n = len(self.y)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _flip_crop(self, xb: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
        n, c, h, w = xb.shape
        rows = self._rows[dy].view(n, 1, h, 1).expand(n, c, h, w)
        cols = self._cols[flip, dx].view(n, 1, 1, w).expand(n, c, h, w)
        return xb.gather(2, rows).gather(3, cols)

    def epoch(self, generator: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.y)
        order = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
        order = order.to(self.device)
        if self.augment == "flip_crop":
            # The whole epoch's draws at once: one transfer, and independent of how batches are consumed.
            span = 2 * self.pad + 1
            dy, dx = torch.randint(0, span, (2, n), generator=generator).to(self.device)
            flip = (torch.rand(n, generator=generator) < 0.5).long().to(self.device)
        for i in range(len(self)):
            part = slice(i * self.batch_size, (i + 1) * self.batch_size)
            idx = order[part]
            xb = self.x[idx]
            if self.augment == "flip_crop":
                xb = self._flip_crop(xb, dy[part], dx[part], flip[part])
            if self.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yield xb, self.y[idx]
