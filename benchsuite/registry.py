"""A name -> object table filled by a decorator: the shape of every plug-in point in benchsuite."""

from __future__ import annotations

from typing import Callable, TypeVar

T = TypeVar("T")


class Registry(dict):
    def register(self, name: str) -> Callable[[T], T]:
        def wrap(obj: T) -> T:
            self[name] = obj
            return obj
        return wrap


def name_and_options(v, key: str):
    """A spec's shorthand for a registered thing with options: `- x` and `- {KEY: x, opt: 1}` both mean
    {KEY: x, options: {opt: 1}}; anything else passes through to validation unchanged."""
    if isinstance(v, str):
        return {key: v}
    if isinstance(v, dict) and "options" not in v and key in v:
        return {key: v[key], "options": {k: x for k, x in v.items() if k != key}}
    return v
