"""Options models of the analysis kinds in this package, registered for spec validation."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from benchsuite.measure.blocks import BlockParams
from benchsuite.spec.analyses import _Options, register_analysis

# A run-name glob (`*` and `?` are wildcards, brackets are literal, so "cifar_resnet[depth=56,*" works)
# or a dict of architecture parameters, each a value or a list of allowed values.
RunSelector = str | dict[str, Any]


@register_analysis("predictions")
class PredictionOptions(_Options):
    """Label, predicted class and confidence (max softmax probability) of every evaluation example."""


@register_analysis("probes")
class ProbeOptions(_Options):
    """Linear probe at every probe point: logistic regression on frozen, standardised features, fit
    on the run's training subset, accuracy on the evaluation set."""

    pooling: Literal["avg", "none"] = Field(
        "avg", description="avg: global average over spatial positions; none: every feature (memory: examples x C x H x W)")
    l2: float = Field(1e-3, ge=0, description="L2 penalty on the probe's weights, added to the mean cross-entropy")
    max_iter: int = Field(200, ge=1, description="L-BFGS iterations")


@register_analysis("ablation")
class AblationOptions(_Options):
    """Block deletion: accuracy with each residual block's branch skipped, then with every residual
    block inside each detected block structure skipped, without retraining."""

    detector: BlockParams = Field(BlockParams(), description="thresholds of the block-structure detector")


@register_analysis("errors")
class ErrorOptions(_Options):
    """Do two groups of runs err differently? Per-class accuracy across seeds, a per-class test with
    Benjamini-Hochberg correction, and per-example agreement between runs."""

    group_a: RunSelector | None = Field(None, description="runs of group A: a run-name glob or parameter dict; null: every run")
    group_b: RunSelector | None = Field(None, description="runs of group B, as group_a")
    match: Literal["none", "accuracy"] = Field(
        "none", description="accuracy: compare the architecture of A and the architecture of B closest in mean accuracy")
    test: Literal["welch", "permutation"] = Field("welch", description="per-class test across seeds")
    alpha: float = Field(0.05, gt=0, lt=1, description="false discovery rate of the Benjamini-Hochberg correction")
    permutations: int = Field(10_000, ge=100, description="permutation test: random splits when exact enumeration needs more")
    seed: int = Field(0, description="permutation test: seed of the random splits")

    @model_validator(mode="after")
    def _groups(self):
        if self.match == "none" and (self.group_a is None or self.group_b is None):
            raise ValueError("give group_a and group_b, or match: accuracy to pick the pair automatically")
        return self


@register_analysis("measure_agreement")
class AgreementOptions(_Options):
    """Do the spec's similarity measures (measure.similarity, two or more) agree? Layer correspondence
    across seeds, block structure under each measure and its overlap, rank agreement over all cells."""

    detector: BlockParams = Field(BlockParams(), description="block-detector thresholds, applied to every measure "
                                                             "read as a similarity (calibrated for CKA)")
