"""Models measured in a faster, equivalent form, and given back as they were.

In eval mode a BatchNorm that takes a convolution's output is a per-channel affine map, so it can be
folded into that convolution's weight and bias and skipped; on a CPU, convolutions run fastest
channels-last (oneDNN's own layout). Both change float32 rounding only, and a fold is kept only if
every probe point's features on the first examples stay within `TOLERANCE` of the model as given.
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
    return bool(m._forward_hooks or m._forward_pre_hooks)


def conv_bn_pairs(model: nn.Module, x: torch.Tensor, probed: set[str]) -> list[tuple[nn.Module, nn.Module]]:
    """(convolution, BatchNorm) pairs in which the BatchNorm read the output of the module run just before
    it, that convolution; each module run once and in one pair, the BatchNorm with running statistics,
    neither a probe point nor hooked."""
    candidates = {m: name for name, m in model.named_modules()
                  if name not in probed and not _hooked(m) and (type(m) in _CONVS or type(m) in _NORMS and
                                                                 m.running_mean is not None)}
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

    handles = [m.register_forward_hook(conv_ran) if type(m) in _CONVS else m.register_forward_pre_hook(norm_runs)
               for m in candidates]
    handles += [m.register_forward_hook(other_ran) for m in model.modules() if m not in candidates and
                not any(True for _ in m.children())]  # a leaf in between breaks the chain
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return [(c, b) for c, b in pairs if calls[c] == calls[b] == 1]


def fold(pairs: Sequence[tuple[nn.Module, nn.Module]]):
    """Fold each BatchNorm into its convolution; returns the function that undoes it exactly."""
    saved = []
    for conv, bn in pairs:
        saved.append((conv, conv.weight, conv.bias, bn))
        conv.weight, conv.bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var,
                                                      bn.eps, bn.weight, bn.bias)
        bn.forward = _identity

    def undo():
        for conv, weight, bias, bn in saved:
            conv.weight, conv.bias = weight, bias
            del bn.forward
    return undo


def _features(model: nn.Module, points, x: torch.Tensor) -> list[torch.Tensor]:
    with FeatureCapture(model, points) as cap:
        model(x)
        return cap.features


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool((a - b).abs().max() <= TOLERANCE * b.abs().max())


class FastForm:
    """`with FastForm(models, points) as form:` call `form.prepare(i, x)` before model i's forward on x;
    the first call folds its BatchNorms (verified on x's first examples) and, on a CPU, makes its
    convolutions channels-last. On exit every model has its own parameters and layout back."""

    def __init__(self, models: Sequence[nn.Module], points: Sequence[Sequence]):
        self.models, self.points = list(models), list(points)
        self.prepared = [False] * len(self.models)
        self.folded = [0] * len(self.models)  # BatchNorms folded, per model
        self._undo: list = []

    def __enter__(self) -> "FastForm":
        return self

    def __exit__(self, *exc) -> None:
        with torch.no_grad():
            while self._undo:
                self._undo.pop()()

    def prepare(self, i: int, x: torch.Tensor) -> None:
        if self.prepared[i]:
            return
        self.prepared[i] = True
        model, points = self.models[i], self.points[i]
        with torch.no_grad():
            x = x[:CHECK_EXAMPLES].clone()
            pairs = conv_bn_pairs(model, x, {p.module for p in points})
            if pairs:
                before = _features(model, points, x)
                undo = fold(pairs)
                if all(_close(a, b) for a, b in zip(_features(model, points, x), before)):
                    self._undo.append(undo)
                    self.folded[i] = len(pairs)
                else:
                    undo()
            self._channels_last(model)

    def _channels_last(self, model: nn.Module) -> None:
        convs = [t for t in [*model.parameters(), *model.buffers()] if t.dim() == 4]
        if convs and all(t.device.type == "cpu" and t.is_contiguous() for t in convs):
            model.to(memory_format=torch.channels_last)
            self._undo.append(lambda: model.to(memory_format=torch.contiguous_format))
