"""Training: `train(config, data, ...)` is a library function; the CLI and executors call it.

An epoch is a pure function of the state at its start and a generator seeded by (seed, epoch),
so resuming from the checkpoint of epoch e reproduces an uninterrupted run exactly.
"""

from __future__ import annotations

import errno
import io
import math
import os
import pickle
import re
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from benchsuite.data.loader import DeviceLoader
from benchsuite.errors import DiskFullError, RunFailed
from benchsuite.spec.schema import RunConfig, TrainSpec
from benchsuite.train.data import PreparedData


def select_device(preference: str = "auto") -> torch.device:
    if preference != "auto":
        return torch.device(preference)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def build_optimizer(model: nn.Module, spec: TrainSpec) -> torch.optim.Optimizer:
    # No weight decay on BatchNorm and biases (standard for CIFAR ResNets), nor on what a timm model
    # exempts itself (a ViT's class token and position embeddings).
    exempt = set(getattr(model, "no_weight_decay", set)())
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and n not in exempt]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1 or n in exempt]
    groups = [{"params": decay, "weight_decay": spec.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if spec.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=spec.lr, momentum=spec.momentum, nesterov=spec.nesterov and spec.momentum > 0)
    return torch.optim.AdamW(groups, lr=spec.lr)


def lr_factor(spec: TrainSpec, step: int, total: int, steps_per_epoch: int) -> float:
    """Multiplier of the base learning rate at optimizer step `step` of `total`."""
    warm = spec.warmup_epochs * steps_per_epoch
    if step < warm:
        return (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    if spec.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    if spec.schedule == "step":
        return spec.step_gamma ** sum(progress >= m for m in spec.step_milestones)
    if spec.schedule == "onecycle":
        # linear up to the peak at 30%, then linear down to zero
        return progress / 0.3 if progress < 0.3 else max(0.0, (1 - progress) / 0.7)
    return 1.0


class Diverged(RunFailed):
    """The training loss became non-finite: the run failed and nothing it measured is evidence."""

    def __init__(self, epoch: int, loss: float, what: str = "training loss"):
        super().__init__(f"diverged at epoch {epoch}: {what} {loss}")
        self.epoch = epoch


@dataclass
class TrainResult:
    model: nn.Module
    metrics: list[dict] = field(default_factory=list)  # {name, epoch, value}
    epochs_done: int = 0
    train_seconds: float = 0.0
    resumed_from: int = 0  # epochs already done when this call started
    device: str = "cpu"
    notes: list[str] = field(default_factory=list)  # what the user should know (a checkpoint set aside)


def _atomic_save(obj, path: Path) -> None:
    """Write `path` whole or not at all: a crash or a full disk leaves the previous file as it was."""
    tmp = path.with_suffix(f"{path.suffix}.{os.getpid()}.tmp")  # per process: drivers may share a folder
    buf = io.BytesIO()
    torch.save(obj, buf)  # in memory first: torch's zip writer hides the OSError of a full disk
    try:
        with open(tmp, "wb") as f:
            f.write(buf.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(f"{path.parent}: no space left on the device for checkpoint {path.name}; the previous "
                                "checkpoint is intact: free space and rerun the same command to resume") from None
        raise


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict:
    """A checkpoint's contents. weights_only: tensors and plain values only, so a file planted in a shared
    artifacts folder cannot run code here. Raises CorruptCheckpoint with the reason."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:  # a pickle that wants code run: say which, not torch's advice
        found = re.search(r"unsupported (GLOBAL \S+)", str(exc))
        raise CorruptCheckpoint(path, f"it holds more than tensors and plain values: {found.group(1) if found else exc}") from None
    except Exception as exc:  # a truncated zip, not a checkpoint at all
        raise CorruptCheckpoint(path, str(exc).split(". ")[0].strip() or type(exc).__name__) from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise CorruptCheckpoint(path, "no model state in it")
    return state


class CorruptCheckpoint(RunFailed):
    """A checkpoint file that cannot be used: truncated, not a checkpoint, or wanting code to unpickle."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: cannot be loaded ({reason})")
        self.path, self.reason = path, reason


_RESUME_KEYS = {"model", "optimizer", "scaler", "metrics", "epoch", "train_seconds"}


def _resume_state(checkpoint: Path, device: torch.device, model: nn.Module, notes: list[str]) -> dict | None:
    """The checkpoint to resume from, or None after moving a damaged one aside (last.pt.corrupt-<time>):
    then the run trains from scratch instead of failing the same way on every rerun."""
    try:
        state = load_checkpoint(checkpoint, device)
        missing = _RESUME_KEYS - state.keys()
        if missing:
            raise CorruptCheckpoint(checkpoint, f"no {', '.join(sorted(missing))} in it")
        expected = {k: v.shape for k, v in model.state_dict().items()}
        if {k: getattr(v, "shape", None) for k, v in state["model"].items()} != expected:
            raise CorruptCheckpoint(checkpoint, "its model state is not this run's architecture")
        return state
    except CorruptCheckpoint as exc:
        aside = checkpoint.with_name(f"{checkpoint.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
        os.replace(checkpoint, aside)
        notes.append(f"{exc}; moved to {aside.name}, training from scratch")
        return None


@torch.inference_mode()
def evaluate(model: nn.Module, loader: DeviceLoader, amp: torch.dtype | None) -> tuple[float, float]:
    """Mean loss and accuracy over a loader, in eval mode."""
    model.eval()
    loss_sum, correct, n = 0.0, 0, 0
    for xb, yb in loader.epoch():
        with torch.autocast(loader.device.type, dtype=amp) if amp else nullcontext():
            logits = model(xb)
        loss_sum += float(F.cross_entropy(logits.float(), yb, reduction="sum"))
        correct += int((logits.argmax(1) == yb).sum())
        n += len(yb)
    return loss_sum / n, correct / n


def train(config: RunConfig, data: PreparedData, model: nn.Module, *, device: torch.device,
          checkpoint: Path | None = None, on_step: Callable[[int, int, int], None] | None = None,
          on_epoch: Callable[[int, list[dict]], None] | None = None, keep_epochs: list[int] = ()) -> TrainResult:
    """Train `model` for `config.train.epochs`, resuming from `checkpoint` when it exists.

    `on_step(epoch, batch, batches_per_epoch)` is called after every optimizer step (progress bars),
    `on_epoch(epochs_done, metrics)` after every epoch's checkpoint with that epoch's {name, value} rows.
    The checkpoint is written atomically after every epoch; the model state of each epoch in
    `keep_epochs` is also kept beside it as epoch_<e>.pt.
    """
    spec = config.train
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    train_loader = DeviceLoader(data.train_x, data.train_y, batch_size=spec.batch_size, mean=data.mean, std=data.std,
                                device=device, augment=spec.augmentation, shuffle=True,
                                drop_last=len(data.train_y) > spec.batch_size)
    eval_loader = data.eval_loader(device)
    optimizer = build_optimizer(model, spec)
    steps_per_epoch = len(train_loader)
    total_steps = spec.epochs * steps_per_epoch
    amp = autocast_dtype(spec.precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp is torch.float16)

    result = TrainResult(model=model, device=str(device))
    state = _resume_state(checkpoint, device, model, result.notes) if checkpoint is not None and checkpoint.exists() else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        result.metrics, result.epochs_done = state["metrics"], state["epoch"]
        result.train_seconds, result.resumed_from = state["train_seconds"], state["epoch"]

    for epoch in range(result.epochs_done, spec.epochs):
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
        model.train()
        start = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        for b, (xb, yb) in enumerate(train_loader.epoch(generator)):
            step = epoch * steps_per_epoch + b
            for group in optimizer.param_groups:
                group["lr"] = spec.lr * lr_factor(spec, step, total_steps, steps_per_epoch)
            with torch.autocast(device.type, dtype=amp) if amp else nullcontext():
                logits = model(xb)
                loss = F.cross_entropy(logits.float(), yb, label_smoothing=spec.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            loss_sum += loss.detach() * len(yb)
            correct += (logits.detach().argmax(1) == yb).sum()
            seen += len(yb)
            if on_step:
                on_step(epoch, b + 1, steps_per_epoch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        result.train_seconds += time.perf_counter() - start
        train_loss = float(loss_sum) / seen
        if not math.isfinite(train_loss):
            raise Diverged(epoch + 1, train_loss)  # before the checkpoint: the last one stays finite
        eval_loss, eval_acc = evaluate(model, eval_loader, amp)
        if not math.isfinite(eval_loss):  # finite in training, overflowing in eval mode (BatchNorm statistics)
            raise Diverged(epoch + 1, eval_loss, "evaluation loss")
        values = {"train_loss": train_loss, "train_acc": float(correct) / seen,
                  "eval_loss": eval_loss, "eval_acc": eval_acc, "lr": optimizer.param_groups[0]["lr"]}
        result.metrics += [{"name": k, "epoch": epoch + 1, "value": v} for k, v in values.items()]
        result.epochs_done = epoch + 1
        if checkpoint is not None:
            _atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                          "scaler": scaler.state_dict(), "metrics": result.metrics, "epoch": epoch + 1,
                          "train_seconds": result.train_seconds}, checkpoint)
            if epoch + 1 in keep_epochs:
                _atomic_save({"model": model.state_dict(), "epoch": epoch + 1}, checkpoint.with_name(f"epoch_{epoch + 1}.pt"))
        if on_epoch:
            on_epoch(epoch + 1, [{"name": k, "value": v} for k, v in values.items()])
    model.eval()
    return result
