"""`bench families`: the architecture families and the parameters a spec may grid over."""

from __future__ import annotations

import json
import types
import typing
from typing import Annotated, Any

import typer

from benchsuite.cli._common import FormatOption, print_rows

_BOUNDS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))


def _type_name(t: Any, bounds: list[str]) -> str:
    if t is type(None):
        return "null"
    if t is bool:
        return "true | false"
    if typing.get_origin(t) is typing.Literal:
        return " | ".join(str(a) for a in typing.get_args(t))
    if isinstance(t, type) and not typing.get_args(t):
        return " ".join([t.__name__, *bounds]) if t in (int, float) else t.__name__
    return str(t)  # a generic such as list[int] prints as written


def allowed_values(field) -> str:
    """A parameter's type, choices and bounds in spec terms: `int >= 1 or null`, `all | cls | mean`."""
    bounds = [f"{op} {getattr(m, attr)}" for m in field.metadata for attr, op in _BOUNDS
              if getattr(m, attr, None) is not None]
    ann = field.annotation
    args = typing.get_args(ann) if typing.get_origin(ann) in (typing.Union, types.UnionType) else (ann,)
    return " or ".join(_type_name(a, bounds) for a in args)


def _default(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def register(app: typer.Typer) -> None:
    @app.command("families")
    def families(pattern: Annotated[str, typer.Argument(help="fnmatch pattern of family names")] = "*",
                 fmt: FormatOption = "table") -> None:
        """Architecture families and their parameters: allowed values, defaults, descriptions."""
        from benchsuite.errors import BenchError
        from benchsuite.models import get_family, list_families

        names = list_families(pattern)
        if not names:
            raise BenchError(f"no family matches {pattern!r}; known: {', '.join(list_families())}")
        rows = []
        for name in names:
            family = get_family(name)
            rows.append((name, "", "", "", family.description))  # the family's own line heads its parameters
            rows += [(name, param, allowed_values(f), _default(f.default), f.description or "")
                     for param, f in family.params.model_fields.items()]
        print_rows(["family", "parameter", "allowed", "default", "description"], rows, fmt=fmt,
                   title="architecture families (spec: family.name, family.grid)")
