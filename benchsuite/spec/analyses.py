"""Registry of analysis kinds a spec may declare, each with a pydantic model of its options."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from benchsuite.measure.blocks import BlockParams
from benchsuite.registry import Registry

_ANALYSES = Registry()  # kind -> pydantic model of its options
register_analysis = _ANALYSES.register


def analysis_kinds() -> dict[str, type[BaseModel]]:
    return dict(sorted(_ANALYSES.items()))


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")


@register_analysis("cka")
class CKAOptions(_Options):
    """Within-model CKA heatmap over all probe points (minibatch estimator, U-centred HSIC_1)."""


@register_analysis("pcs")
class PCOptions(_Options):
    """First principal component at every probe point: variance fraction, example scores, the
    squared-cosine map between layers' first PCs, and CKA recomputed after removing each PC1."""

    scores: bool = Field(True, description="store each evaluation example's PC1 score (table pc_scores)")


@register_analysis("blocks")
class BlockOptions(BlockParams):
    """Block-structure detection on the within-model CKA heatmap and PC1 fractions."""


@register_analysis("cross_cka")
class CrossCKAOptions(_Options):
    """CKA between the probe points of different runs, from one pass over the evaluation set."""

    across: Literal["seeds", "architectures", "all"] = Field(
        "seeds", description="seeds: runs of one architecture; architectures: runs of one seed; all: every run")
    pairs: list[tuple[str, str]] | None = Field(
        None, description="only these pairs of run-name globs (family[k=v,...]) instead of all pairs")


@register_analysis("training_cka")
class TrainingCKAOptions(_Options):
    """CKA between a run's checkpoint at each listed epoch and its final model."""

    epochs: list[int] = Field(description="epochs whose checkpoints are kept and compared with the final model")


# Options models defined elsewhere register themselves on import (below the registry they use).
from benchsuite.analyses import options  # noqa: E402,F401
