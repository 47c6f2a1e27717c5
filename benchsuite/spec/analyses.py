"""Registry of analysis kinds a spec may declare, each with a pydantic model of its options."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

_ANALYSES: dict[str, type[BaseModel]] = {}


def register_analysis(kind: str):
    """Class decorator on the options model of an analysis kind."""

    def wrap(cls: type[BaseModel]):
        _ANALYSES[kind] = cls
        return cls

    return wrap


def analysis_kinds() -> dict[str, type[BaseModel]]:
    return dict(sorted(_ANALYSES.items()))


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")


@register_analysis("cka")
class CKAOptions(_Options):
    """Within-model CKA heatmap over all probe points (minibatch estimator, U-centred HSIC_1)."""


@register_analysis("pcs")
class PCOptions(_Options):
    """Variance fraction of the first principal component at every probe point."""
