"""Models measured in a faster, equivalent form, and given back as they were.

In eval mode a BatchNorm that takes a convolution's output is a per-channel affine map, so it can be
folded into that convolution's weight and bias and skipped; on a CPU, convolutions run fastest
channels-last (oneDNN's own layout). Each change is kept only if every probe point's features on the
first examples stay within `TOLERANCE` of the model as given (and the model still runs); otherwise
the model is measured without it. With TF32 convolutions (CUDA's default) folds will rarely pass.
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import torch
import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from benchsuite.measure.capture import FeatureCapture

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
CHECK_EXAMPLES = 4
TOLERANCE = 1e-4  # max |change| / max |feature| of a probe point; float32 round-off of a fold is ~1e-6


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _hooked(m: nn.Module) -> bool:
    return bool(m._forward_hooks or m._forward_pre_hooks) or "forward" in vars(m)


def conv_bn_pairs(model: nn.Module, x: torch.Tensor, probed: set[str],
                  exclude: set[nn.Module] = frozenset()) -> list[tuple[nn.Module, nn.Module]]:
    """(convolution, BatchNorm) pairs in which the BatchNorm read the output of the module run just before
    it, that convolution; each module run once and in one pair, the BatchNorm with running statistics,
    none a probe point, hooked or in `exclude`."""
    candidates = {m for name, m in model.named_modules()
                  if name not in probed and m not in exclude and not _hooked(m) and
                  (type(m) in _CONVS or type(m) in _NORMS and m.running_mean is not None)}
    calls, last, pairs = Counter(), [None, None], []

    def conv_ran(module, args, out):
        calls[module] += 1
        last[:] = [module, out]

    def norm_runs(module, args):
        calls[module] += 1
        if args and args[0] is last[1]:
            pairs.append((last[0], module))
        last[:] = [None, None]  # a second BatchNorm on the same output is not the convolution's to fold

    def other_ran(module, args, out):
        last[:] = [None, None]

    handles = []
    try:
        for m in model.modules():
            if m in candidates:
                handles.append(m.register_forward_hook(conv_ran) if type(m) in _CONVS else
                               m.register_forward_pre_hook(norm_runs))
            elif not any(True for _ in m.children()):  # a leaf in between breaks the chain
                handles.append(m.register_forward_hook(other_ran))
        model(x)
    finally:
        for h in handles:
            h.remove()
    return [(c, b) for c, b in pairs if calls[c] == calls[b] == 1]


def fold(pairs: Sequence[tuple[nn.Module, nn.Module]]):
    """Fold each BatchNorm into its convolution; returns the function that undoes it exactly."""
    saved = []

    def undo():
        for conv, weight, bias, bn in reversed(saved):
            conv.weight, conv.bias = weight, bias
            del bn.forward
    try:
        for conv, bn in pairs:
            weight, bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var,
                                                bn.eps, bn.weight, bn.bias)
            saved.append((conv, conv.weight, conv.bias, bn))
            conv.weight, conv.bias = weight, bias
            bn.forward = _identity
    except BaseException:
        undo()
        raise
    return undo


def channels_last(model: nn.Module):
    """Store a CPU model's 4-d tensors channels-last, if all are contiguous; returns the function that puts
    back the very tensors it had (storage shared with anything else stays shared)."""
    tensors = [t for t in [*model.parameters(), *model.buffers()] if t.dim() == 4]
    if not tensors or not all(t.device.type == "cpu" and t.is_contiguous() for t in tensors):
        return lambda: None
    saved = [(t, t.data) for t in tensors]
    for t in tensors:
        t.data = t.data.contiguous(memory_format=torch.channels_last)

    def undo():
        for t, data in saved:
            t.data = data
    return undo


def _features(model: nn.Module, points, x: torch.Tensor) -> list[torch.Tensor]:
    with FeatureCapture(model, points) as cap:
        model(x)
        return cap.features


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool((a - b).abs().max() <= TOLERANCE * b.abs().max())


class FastForm:
    """`with FastForm(models, points) as form:` call `form.prepare(i, x)` before model i's forward on x;
    the first call folds its BatchNorms and, on a CPU, makes its convolutions channels-last, each change
    checked on x's first examples. On exit every model has its own parameter objects, values and layout
    back. Modules shared by several of the models are not folded (a check sees one model only)."""

    def __init__(self, models: Sequence[nn.Module], points: Sequence[Sequence]):
        self.models, self.points = list(models), list(points)
        self.folded = [0] * len(self.models)  # BatchNorms folded, per model
        distinct = list({id(m): m for m in self.models}.values())
        counts = Counter(sub for m in distinct for sub in m.modules())
        self._shared = {sub for sub, c in counts.items() if c > 1}
        self._prepared: dict[int, int] = {}  # id(model) -> the index it was prepared as
        self._undo: list = []

    def __enter__(self) -> "FastForm":
        return self

    def __exit__(self, *exc) -> None:
        with torch.no_grad():
            while self._undo:
                self._undo.pop()()

    def prepare(self, i: int, x: torch.Tensor) -> None:
        model, points = self.models[i], self.points[i]
        if id(model) in self._prepared:  # the same model listed again
            self.folded[i] = self.folded[self._prepared[id(model)]]
            return
        self._prepared[id(model)] = i
        with torch.no_grad():
            x = x[:CHECK_EXAMPLES].clone()
            try:
                before = _features(model, points, x)
                pairs = conv_bn_pairs(model, x, {p.module for p in points}, self._shared)
            except Exception:  # measured as given: the measurement itself reports the model's error
                return
            if pairs and self._keep(model, points, x, before, lambda: fold(pairs)):
                self.folded[i] = len(pairs)
            self._keep(model, points, x, before, lambda: channels_last(model))

    def _keep(self, model, points, x, before, change) -> bool:
        """Make `change`; keep it if the model still gives the probe points' features `before` on x."""
        try:
            undo = change()
        except Exception:
            return False
        try:
            kept = all(_close(a, b) for a, b in zip(_features(model, points, x), before))
        except Exception:
            kept = False
        except BaseException:
            undo()
            raise
        if kept:
            self._undo.append(undo)
        else:
            undo()
        return kept
