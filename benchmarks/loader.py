"""Images/s of DeviceLoader against a torchvision DataLoader doing the same augmentation.

    python benchmarks/loader.py [--n 50000] [--batch-size 512] [--workers 0 2] [--threads N]

Both sides read the same CIFAR-shaped uint8 data, shuffle it, reflect-pad by 4 + random-crop
32x32, flip with probability 1/2, normalise, and hand out float batches on the device.
The baseline is torchvision's CIFAR10 recipe (PIL image per example, per-example transforms).
On a CPU shared with other processes, OpenMP spin-waits can slow torch's intra-op threads tenfold
(DataLoader workers run one thread each): compare with --threads 1.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from benchsuite.data.loader import DeviceLoader

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


class PilCifar(Dataset):
    """What torchvision.datasets.CIFAR10 does per example, on in-memory HWC uint8 images."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_device_loader(x: torch.Tensor, y: torch.Tensor, batch_size: int, device: torch.device,
                       epochs: int) -> float:
    # Mean and std in pixel units, since the data stays uint8 until it is on the device.
    loader = DeviceLoader(x, y, batch_size=batch_size, mean=[m * 255 for m in MEAN], std=[s * 255 for s in STD],
                          device=device, augment="flip_crop")
    for _ in loader.epoch(torch.Generator().manual_seed(0)):  # warm-up epoch
        pass
    _sync(device)
    start = time.perf_counter()
    for e in range(epochs):
        for xb, yb in loader.epoch(torch.Generator().manual_seed(e + 1)):
            pass
    _sync(device)
    return epochs * len(y) / (time.perf_counter() - start)


def time_dataloader(images: np.ndarray, labels: np.ndarray, batch_size: int, device: torch.device,
                    workers: int) -> float:
    transform = transforms.Compose([
        transforms.RandomCrop(32, padding=4, padding_mode="reflect"),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(MEAN, STD),
    ])
    loader = DataLoader(PilCifar(images, labels, transform), batch_size=batch_size, shuffle=True,
                        num_workers=workers, persistent_workers=workers > 0, pin_memory=device.type == "cuda")
    for _ in loader:  # warm-up epoch: starts the (persistent) workers
        pass
    start = time.perf_counter()
    for xb, yb in loader:
        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
    _sync(device)
    return len(labels) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=50_000, help="number of 3x32x32 images")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader num_workers to try")
    parser.add_argument("--epochs", type=int, default=3, help="timed DeviceLoader epochs")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(args.n, 32, 32, 3), dtype=np.uint8)  # HWC, as CIFAR10 keeps them
    labels = rng.integers(0, 10, size=args.n)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    y = torch.from_numpy(labels)

    # The load average tells whether other processes shared the CPU (intra-op threads suffer most).
    print(f"{args.n} images 3x32x32, batch {args.batch_size}, flip + reflect-pad-4 crop, device {device}, "
          f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}")
    ours = time_device_loader(x, y, args.batch_size, device, args.epochs)
    print(f"  DeviceLoader                     {ours:12,.0f} images/s")
    baselines = {}
    for workers in args.workers:
        baselines[workers] = time_dataloader(images, labels, args.batch_size, device, workers)
        print(f"  DataLoader+torchvision workers={workers} {baselines[workers]:12,.0f} images/s")
    best = max(baselines, key=baselines.get)
    print(f"  speed-up over the best baseline (workers={best}): {ours / baselines[best]:.1f}x")


if __name__ == "__main__":
    main()
