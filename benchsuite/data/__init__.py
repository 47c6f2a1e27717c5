"""Datasets: registry, subsets and the device-resident loader."""

from benchsuite.data.registry import ImageData, data_dir, dataset_info, list_datasets, load_dataset, register_dataset
from benchsuite.data.subsets import balanced_subset, eval_order

__all__ = [
    "ImageData", "data_dir", "dataset_info", "list_datasets", "load_dataset", "register_dataset",
    "balanced_subset", "eval_order",
]
