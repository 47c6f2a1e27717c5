"""Forward hooks that collect probe-point activations of any nn.Module."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn as nn


class FeatureCapture:
    """`with FeatureCapture(model, points) as cap: model(x)` fills `cap.features` in point order.

    Outputs are cloned, so a later in-place op (ReLU(inplace=True)) cannot change them. A module
    used several times in one forward keeps the output of every call; a probe point's `call`
    picks one (the last by default). `features` is cleared at the start of each forward of `model`.

    `reduce`: each probe point's features become `reduce(features)` as soon as its module has run,
    and the activation itself is never kept, so a forward holds one activation at a time instead of
    all of them: `reduce=centred_gram` with `MinibatchCKA.update_grams` (a module called several
    times is reduced at every call).
    """

    def __init__(self, model: nn.Module, points: Sequence, detach: bool = True,
                 reduce: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.model, self.points, self.detach, self.reduce = model, list(points), detach, reduce
        self._slots: dict[str, list] = {}  # module -> per call: its output, or {point index: reduced}
        self._handles: list = []

    def _hook(self, name: str):
        mine = [(i, p) for i, p in enumerate(self.points) if p.module == name]

        def hook(module, args, output):
            out = output[0] if isinstance(output, (tuple, list)) else output
            out = out.detach() if self.detach else out
            if self.reduce is None:
                self._slots.setdefault(name, []).append(out.clone())
            else:
                self._slots.setdefault(name, []).append(
                    {i: self.reduce(read_tokens(out, p.tokens, p.prefix_tokens)) for i, p in mine})
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
        if self.reduce is not None:
            return [self._slots[p.module][p.call][i] for i, p in enumerate(self.points)]
        return [read_tokens(self._slots[p.module][p.call], p.tokens, p.prefix_tokens) for p in self.points]


def read_tokens(x: torch.Tensor, tokens: str = "all", prefix_tokens: int = 0) -> torch.Tensor:
    """A probe point's features from its module output: the token rule of ProbePoint.

    `all` keeps the output whole (CKA and PCA flatten it per example); on (n, tokens, dim) outputs
    `cls` takes token 0 and `mean` averages the tokens after the first `prefix_tokens`.
    """
    if tokens == "all":
        return x
    if x.ndim != 3:
        raise ValueError(f"token rule {tokens!r} needs a (n, tokens, dim) output, got shape {tuple(x.shape)}")
    if tokens == "cls":
        return x[:, 0]
    if tokens == "mean":
        return x[:, prefix_tokens:].mean(1)
    raise ValueError(f"unknown token rule {tokens!r}; allowed: all, cls, mean")
