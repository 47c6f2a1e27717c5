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
