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
from benchsuite.train.stack import stack_optimizer_states, stack_states, unstack_optimizer_state, unstack_state


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
def evaluate_runs(model: nn.Module, loader: DeviceLoader, amp: torch.dtype | None, runs: int = 1) -> list[tuple[float, float]]:
    """Mean loss and accuracy over a loader, in eval mode, of each of the `runs` a (stacked) model holds."""
    model.eval()
    loss_sum, correct, n = [0.0] * runs, [0] * runs, 0
    for xb, yb in loader.epoch():
        with torch.autocast(loader.device.type, dtype=amp) if amp else nullcontext():
            logits = _run_logits(model(xb.repeat(1, runs, 1, 1) if runs > 1 else xb), runs)
        for i in range(runs):
            loss_sum[i] += float(F.cross_entropy(_full(logits[:, i]), yb, reduction="sum"))
            correct[i] += int((logits[:, i].argmax(1) == yb).sum())
        n += len(yb)
    return [(loss / n, c / n) for loss, c in zip(loss_sum, correct)]


def evaluate(model: nn.Module, loader: DeviceLoader, amp: torch.dtype | None) -> tuple[float, float]:
    """Mean loss and accuracy over a loader, in eval mode."""
    return evaluate_runs(model, loader, amp)[0]


def _full(logits: torch.Tensor) -> torch.Tensor:
    """Logits for the loss: autocast's bf16/fp16 upcast to float32, float32 and float64 as they are."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def _run_logits(out: torch.Tensor, runs: int) -> torch.Tensor:
    """(n, runs, classes): a stacked model's output, or an ordinary one's with a runs axis of 1."""
    return out if runs > 1 else out.unsqueeze(1)


def train(config: RunConfig, data: PreparedData, model: nn.Module, *, device: torch.device,
          checkpoint: Path | None = None, on_step: Callable[[int, int, int], None] | None = None,
          on_epoch: Callable[[int, list[dict]], None] | None = None, keep_epochs: list[int] = ()) -> TrainResult:
    """Train `model` for `config.train.epochs`, resuming from `checkpoint` when it exists.

    `on_step(epoch, batch, batches_per_epoch)` is called after every optimizer step (progress bars),
    `on_epoch(epochs_done, metrics)` after every epoch's checkpoint with that epoch's {name, value} rows.
    The checkpoint is written atomically after every epoch; the model state of each epoch in
    `keep_epochs` is also kept beside it as epoch_<e>.pt.
    """
    return train_runs([config], data, [model], device=device, checkpoints=[checkpoint], on_step=on_step,
                      on_epoch=[on_epoch], keep_epochs=keep_epochs)[0]


def train_runs(configs: list[RunConfig], data: PreparedData, models: list[nn.Module], *, device: torch.device,
               stacked: nn.Module | None = None, checkpoints: list[Path | None], on_step=None,
               on_epoch: list[Callable | None], keep_epochs: list[int] = (), channels_last: bool = True) -> list[TrainResult]:
    """Train runs that differ only in their seed, as `train` trains one: with several, `stacked` is the
    family's model for all of them (`stack=K`), loaded from `models` (or from the runs' checkpoints, which
    must be at one epoch) and trained on the sum of the runs' losses, each run with its own data order and
    augmentation; its state goes back into `models` and into each run's checkpoint in the ordinary format.
    Each run's parameters get only its own loss's gradient, and every optimizer update is elementwise, so
    each run computes what it would alone (to float32 round-off: grouped kernels sum in another order).
    Convolutions run channels-last, fastest on GPUs and through oneDNN on CPUs; `channels_last=False` keeps
    the contiguous loop (the benchmarks' baseline)."""
    k = len(configs)
    spec = configs[0].train
    net = models[0] if k == 1 else stacked
    amp = autocast_dtype(spec.precision, device)
    train_loader = DeviceLoader(data.train_x, data.train_y, batch_size=spec.batch_size, mean=data.mean, std=data.std,
                                device=device, augment=spec.augmentation, shuffle=True,
                                drop_last=len(data.train_y) > spec.batch_size, channels_last=channels_last)
    eval_loader = data.eval_loader(device)
    steps_per_epoch = len(train_loader)
    total_steps = spec.epochs * steps_per_epoch
    if k > 1 and amp is torch.float16:
        raise ValueError("stacked seeds share one fp16 loss scale, so they would skip each other's steps")
    scaler = torch.amp.GradScaler(device.type, enabled=amp is torch.float16)

    results = [TrainResult(model=m, device=str(device)) for m in models]
    states = [_resume_state(c, device, m, r.notes) if c is not None and c.exists() else None
              for c, m, r in zip(checkpoints, models, results)]
    if len({s["epoch"] if s else 0 for s in states}) > 1:
        raise ValueError("runs stacked together must resume from checkpoints of one epoch")
    if states[0] is not None:
        for m, r, s in zip(models, results, states):
            m.load_state_dict(s["model"])
            r.metrics, r.epochs_done, r.train_seconds, r.resumed_from = s["metrics"], s["epoch"], s["train_seconds"], s["epoch"]
    if k > 1:
        net.load_state_dict(stack_states([m.state_dict() for m in models]))
    net.to(device)
    if channels_last:
        net.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(net, spec)
    if states[0] is not None:
        optimizer.load_state_dict(stack_optimizer_states([s["optimizer"] for s in states]) if k > 1 else states[0]["optimizer"])
        scaler.load_state_dict(states[0]["scaler"])

    for epoch in range(results[0].epochs_done, spec.epochs):
        generators = [torch.Generator().manual_seed(c.seed * 1_000_003 + epoch) for c in configs]
        net.train()
        start = time.perf_counter()
        loss_sum = torch.zeros(k, device=device)
        correct = torch.zeros(k, device=device, dtype=torch.long)
        seen = 0
        for b, batches in enumerate(zip(*(train_loader.epoch(g) for g in generators))):
            step = epoch * steps_per_epoch + b
            for group in optimizer.param_groups:
                group["lr"] = spec.lr * lr_factor(spec, step, total_steps, steps_per_epoch)
            xs, ys = zip(*batches)
            with torch.autocast(device.type, dtype=amp) if amp else nullcontext():
                logits = _run_logits(net(xs[0] if k == 1 else torch.cat(xs, 1)), k)
                losses = [F.cross_entropy(_full(logits[:, i]), y, label_smoothing=spec.label_smoothing)
                          for i, y in enumerate(ys)]
                loss = losses[0] if k == 1 else torch.stack(losses).sum()
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            for i, y in enumerate(ys):
                loss_sum[i] += losses[i].detach() * len(y)
                correct[i] += (logits[:, i].detach().argmax(1) == y).sum()
            seen += len(ys[0])
            if on_step:
                on_step(epoch, b + 1, steps_per_epoch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - start
        train_loss = [float(v) / seen for v in loss_sum]
        for loss in train_loss:
            if not math.isfinite(loss):
                raise Diverged(epoch + 1, loss)  # before the checkpoint: the last one stays finite
        due = (epoch + 1) % spec.eval_every == 0 or epoch + 1 == spec.epochs
        evaluated = evaluate_runs(net, eval_loader, amp, k) if due else []
        for eval_loss, _ in evaluated:
            if not math.isfinite(eval_loss):  # finite in training, overflowing in eval mode (BatchNorm statistics)
                raise Diverged(epoch + 1, eval_loss, "evaluation loss")
        run_states = [net.state_dict()] if k == 1 else unstack_state(net.state_dict(), k)
        run_optimizers = [optimizer.state_dict()] if k == 1 else unstack_optimizer_state(optimizer.state_dict(), k)
        for i, r in enumerate(results):
            values = {"train_loss": train_loss[i], "train_acc": float(correct[i]) / seen}
            if evaluated:
                values["eval_loss"], values["eval_acc"] = evaluated[i]
            values["lr"] = optimizer.param_groups[0]["lr"]
            r.metrics += [{"name": n, "epoch": epoch + 1, "value": v} for n, v in values.items()]
            r.epochs_done = epoch + 1
            r.train_seconds += elapsed
            if checkpoints[i] is not None:
                _atomic_save({"model": run_states[i], "optimizer": run_optimizers[i], "scaler": scaler.state_dict(),
                              "metrics": r.metrics, "epoch": epoch + 1, "train_seconds": r.train_seconds}, checkpoints[i])
                if epoch + 1 in keep_epochs:
                    _atomic_save({"model": run_states[i], "epoch": epoch + 1}, checkpoints[i].with_name(f"epoch_{epoch + 1}.pt"))
            if on_epoch[i]:
                on_epoch[i](epoch + 1, [{"name": n, "value": v} for n, v in values.items()])
    if k > 1:
        for m, state in zip(models, unstack_state(net.state_dict(), k)):
            m.load_state_dict(state)
            m.to(device)
    for m in models:
        m.eval()
    return results
