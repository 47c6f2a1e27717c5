"""Family registry in the spirit of timm's: `@register_family` fills a name -> Family table."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any, Callable

import torch.nn as nn
from pydantic import BaseModel

from benchsuite.errors import BenchError


@dataclass(frozen=True)
class ProbePoint:
    """A named activation CKA and PCA read: `module` is the submodule whose output is taken.

    A module called several times in one forward (torchvision's BasicBlock reuses one ReLU) has
    one output per call: `call` picks which, counting from 0; the default -1 is the last.

    Token outputs (n, tokens, dim) of transformers and Mixers are read by the `tokens` rule: `all`
    flattens the whole output (every token; for any other output, every position and channel),
    `cls` takes token 0 (the class token), `mean` averages the tokens after the first
    `prefix_tokens` (class or register tokens), i.e. the patch tokens.
    """

    name: str
    module: str
    stage: int
    call: int = -1
    tokens: str = "all"
    prefix_tokens: int = 0


@dataclass
class Family:
    name: str
    params: type[BaseModel]  # architecture parameters a spec may grid over, validated per run
    build: Callable[..., nn.Module]  # build(params, num_classes=, in_chans=, image_size=) -> model
    description: str = ""
    stacks: bool = False  # build(..., stack=K) trains K seeds as one model (benchsuite.train.stack)
    zero_init: bool = False  # its models have zero_init_residual() (train.zero_init_residual)


_FAMILIES: dict[str, Family] = {}

# Validation context of a grid value checked alone (spec loading): the other parameters are still
# defaults then, so a params model's cross-parameter checks wait for a whole grid point.
ONE_VALUE = {"one_value": True}


def whole_point(info) -> bool:
    """In a params model's validator (`info`: pydantic's ValidationInfo): are all parameters real?"""
    return not (info.context or {}).get("one_value")


def register_family(name: str, params: type[BaseModel], description: str = "", stacks: bool = False,
                    zero_init: bool = False):
    """Decorator for `build(params, *, num_classes, in_chans, image_size) -> nn.Module`; with `stacks`, the
    builder also takes `stack=K`: K runs in one model, as described in benchsuite/models/cifar_resnet.py;
    with `zero_init`, its models have `zero_init_residual()`."""

    def wrap(fn):
        summary = description or (fn.__doc__ or "").strip().splitlines()[0]
        _FAMILIES[name] = Family(name, params, fn, summary, stacks, zero_init)
        return fn

    return wrap


def _import_builtin() -> None:
    import benchsuite.models.cifar_resnet  # noqa: F401
    import benchsuite.models.timm_families  # noqa: F401


def list_families(pattern: str = "*") -> list[str]:
    _import_builtin()
    return sorted(n for n in _FAMILIES if fnmatch.fnmatch(n, pattern))


def get_family(name: str) -> Family:
    _import_builtin()
    if name not in _FAMILIES:
        raise BenchError(f"unknown family {name!r}; known: {', '.join(list_families())}")
    return _FAMILIES[name]


def create_model(family: str, *, num_classes: int = 10, in_chans: int = 3, image_size: int = 32, stack: int = 1,
                 **params: Any) -> nn.Module:
    """Build a model of `family`; `None` values are dropped so family defaults apply. `stack` > 1: that
    many runs in one model, for families that stack (its weights are meant to be loaded, see train.stack)."""
    fam = get_family(family)
    p = fam.params(**{k: v for k, v in params.items() if v is not None})
    extra = {"stack": stack} if stack > 1 else {}
    if extra and not fam.stacks:
        raise BenchError(f"family {family} cannot train seeds stacked")
    return fam.build(p, num_classes=num_classes, in_chans=in_chans, image_size=image_size, **extra)


def probe_points(model: nn.Module, selection: str | list[str] = "blocks") -> list[ProbePoint]:
    """The model's probe points in forward order.

    `blocks`: the family's declared points (stem and every residual block output). `all`: every
    conv, batch-norm, ReLU and residual add. A list of fnmatch globs selects modules by name.
    """
    declared: list[ProbePoint] = list(getattr(model, "probe_points", []))
    if selection == "blocks":
        if not declared:
            raise BenchError(f"{type(model).__name__} declares no probe points; select modules by glob")
        return declared
    stage_of = _stage_lookup(declared)
    names = [n for n, m in model.named_modules() if n and _is_leafish(m)]
    if selection == "all":
        chosen = [n for n in names if isinstance(model.get_submodule(n), _ALL_KINDS)]
    else:
        chosen = [n for n in names if any(fnmatch.fnmatch(n, pat) for pat in selection)]
    if not chosen:
        raise BenchError(f"probe selection {selection!r} matches no module of {type(model).__name__}")
    return [ProbePoint(n, n, stage_of(n)) for n in chosen]


class Add(nn.Module):
    """Residual addition as a module, so hooks can see it."""

    def forward(self, a, b):
        return a + b


_ALL_KINDS = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Linear, Add)


def _is_leafish(m: nn.Module) -> bool:
    return isinstance(m, _ALL_KINDS) or not any(True for _ in m.children())


def _stage_lookup(declared: list[ProbePoint]):
    """Stage of a module: that of the declared probe point whose module contains it."""
    prefixes = sorted(declared, key=lambda p: -len(p.module))

    def stage_of(name: str) -> int:
        for p in prefixes:
            if name == p.module or name.startswith(p.module + "."):
                return p.stage
        return 0

    return stage_of
