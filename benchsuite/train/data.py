"""A run's data: its training subset and the fixed evaluation set, from the dataset spec."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from benchsuite.data import balanced_subset, eval_order, load_dataset
from benchsuite.data.loader import DeviceLoader
from benchsuite.errors import BenchError, SpecError
from benchsuite.spec.schema import DatasetSpec


@dataclass
class PreparedData:
    train_x: torch.Tensor
    train_y: torch.Tensor
    eval_x: torch.Tensor
    eval_y: torch.Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int
    classes: list[str]
    eval_batch_size: int = 256

    @property
    def in_chans(self) -> int:
        return self.train_x.shape[1]

    @property
    def image_size(self) -> int:
        return self.train_x.shape[-1]

    def eval_loader(self, device, examples: int | None = None) -> DeviceLoader:
        """The evaluation set in its fixed order, so batches line up across models; with `examples`, its
        class-balanced subset of that many (measure.examples), in the same order."""
        x, y = self.eval_x, self.eval_y
        if examples is not None and examples < len(y):
            keep = balanced_subset(y, examples, seed=0)
            x, y = x[keep], y[keep]
        return DeviceLoader(x, y, batch_size=self.eval_batch_size, mean=self.mean, std=self.std, device=device,
                            shuffle=False)


def preflight(spec: DatasetSpec, data_root=None, source: str = "spec") -> None:
    """Before any run starts: the dataset loads (found, readable, verified) and holds every training-set size
    asked for, so a missing dataset is one line instead of one failed run per grid point."""
    data = load_dataset(spec.name, data_root)
    for size in spec.sizes:
        try:
            balanced_subset(data.train_y, size, spec.subset_seed)
        except BenchError as exc:
            raise SpecError(source, "dataset.train_size", f"{exc} ({spec.name})") from None


def prepare_data(spec: DatasetSpec, data_root=None, eval_batch_size: int = 256) -> PreparedData:
    data = load_dataset(spec.name, data_root)
    train_idx = balanced_subset(data.train_y, spec.train_size, spec.subset_seed)
    train_y = data.train_y[train_idx]
    if spec.label_noise:
        from benchsuite.data.subsets import with_label_noise

        train_y = with_label_noise(train_y, spec.label_noise, spec.subset_seed, data.num_classes)
    eval_idx = eval_order(data.test_y, spec.eval_size)
    return PreparedData(train_x=data.train_x[train_idx], train_y=train_y, eval_x=data.test_x[eval_idx],
                        eval_y=data.test_y[eval_idx], mean=data.mean, std=data.std, num_classes=data.num_classes,
                        classes=data.classes, eval_batch_size=eval_batch_size)
