"""Training loop, data preparation and checkpoints."""

from benchsuite.train.data import PreparedData, prepare_data
from benchsuite.train.loop import TrainResult, evaluate, select_device, train

__all__ = ["PreparedData", "TrainResult", "evaluate", "prepare_data", "select_device", "train"]
