"""Forward hooks that collect probe-point activations of any nn.Module."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn


class FeatureCapture:
    """`with FeatureCapture(model, points) as cap: model(x)` fills `cap.features` in point order.

    Outputs are cloned, so a later in-place op (ReLU(inplace=True)) cannot change them. A module
    used several times in one forward keeps the output of every call; a probe point's `call`
    picks one (the last by default). `features` is cleared at the start of each forward of `model`.
    """

    def __init__(self, model: nn.Module, points: Sequence, detach: bool = True):
        self.model, self.points, self.detach = model, list(points), detach
        self._slots: dict[str, list[torch.Tensor]] = {}
        self._handles: list = []

    def _hook(self, name: str):
        def hook(module, args, output):
            out = output[0] if isinstance(output, (tuple, list)) else output
            self._slots.setdefault(name, []).append((out.detach() if self.detach else out).clone())
        return hook

    def __enter__(self) -> "FeatureCapture":
        modules = {p.module for p in self.points}
        for name in modules:
            self._handles.append(self.model.get_submodule(name).register_forward_hook(self._hook(name)))
        self._handles.append(self.model.register_forward_pre_hook(lambda *_: self._slots.clear()))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _reached(self, point) -> bool:
        calls = len(self._slots.get(point.module, ()))
        return -calls <= point.call < calls

    @property
    def features(self) -> list[torch.Tensor]:
        missing = [p.name for p in self.points if not self._reached(p)]
        if missing:
            raise RuntimeError(f"probe points not reached in the forward pass: {missing[:3]}")
        return [self._slots[p.module][p.call] for p in self.points]
