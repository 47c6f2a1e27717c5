"""The spec language: pydantic models of a YAML spec, and of the runs it expands to."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer, model_validator

from benchsuite.measure.similarity import MeasureChoice, list_measures
from benchsuite.registry import name_and_options

STRICT = ConfigDict(extra="forbid")


class DatasetSpec(BaseModel):
    model_config = STRICT

    name: str = Field("digits", description="registered dataset: digits, cifar10, cifar100, fashion_mnist, ...")
    train_size: int | float | None | list[int | float | None] = Field(
        None, description="training subset: a count (int) or a fraction in (0, 1]; null uses the whole split; "
                          "a list sweeps over sizes (one run per size)")
    subset_seed: int = Field(0, description="seed choosing the class-balanced training subset")
    label_noise: float = Field(0.0, ge=0.0, lt=1.0, description="fraction of training labels replaced at random")
    eval_size: int | None = Field(None, gt=3, description="examples in the fixed evaluation set; null: whole test split")

    @field_validator("train_size")
    @classmethod
    def _size(cls, v):
        for size in v if isinstance(v, list) else [v]:
            if isinstance(size, float) and not 0.0 < size <= 1.0:
                raise ValueError(f"a fractional train_size must lie in (0, 1], got {size}")
            if isinstance(size, int) and size < 1:
                raise ValueError(f"train_size must be a positive count or a fraction in (0, 1], got {size}")
            if size == 1 and isinstance(size, int):
                raise ValueError("train_size 1 is a single example; write 1.0 for the whole split")
        if v == []:
            raise ValueError("empty list; give at least one size")
        return v

    @property
    def sizes(self) -> list[int | float | None]:
        return self.train_size if isinstance(self.train_size, list) else [self.train_size]


class TrainSpec(BaseModel):
    model_config = STRICT

    epochs: int = Field(10, ge=1)
    batch_size: int = Field(128, ge=1)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(5e-4, ge=0)
    schedule: Literal["cosine", "step", "onecycle", "constant"] = "cosine"
    step_milestones: list[float] = Field([0.5, 0.75], description="step schedule: fractions of training")
    step_gamma: float = Field(0.1, gt=0)
    warmup_epochs: int = Field(0, ge=0)
    eval_every: int = Field(1, ge=1, description="evaluate every this many epochs (and after the last): a large "
                                                 "evaluation set costs more than a small training set's epoch")
    zero_init_residual: bool = Field(
        False, description="start each residual branch's last BatchNorm scale at 0, so every block begins as "
                           "the identity (Goyal et al. 2017; torchvision's zero_init_residual)")
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    augmentation: Literal["none", "flip_crop"] = "none"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 autocast on GPU, fp32 on CPU")
    # How runs execute, not what they compute: excluded from dumps, so from run ids and stored configs.
    stack_seeds: bool | Literal["auto"] = Field(
        "auto", exclude=True, description="train runs that differ only in their seed as one grouped model: "
                                          "auto (where it is faster), true (wherever the family can), false")

    @model_serializer(mode="wrap")
    def _omit_later_defaults(self, handler):
        # Fields added after runs were stored are left out at their default, so those run ids stay.
        d = handler(self)
        for name in ("eval_every", "zero_init_residual"):
            if getattr(self, name) == type(self).model_fields[name].default:
                d.pop(name, None)
        return d


class MeasureSpec(BaseModel):
    """How measurements read the models: which probe points, and the evaluation batch size."""

    model_config = STRICT

    probes: Literal["blocks", "all"] | list[str] = Field(
        "blocks", description="blocks (stem + residual block outputs), all (every conv/bn/relu/add) or module globs")
    batch_size: int = Field(256, gt=3, description="examples per CKA minibatch (eq. 2 of Nguyen et al.)")
    examples: int | None = Field(
        None, gt=3, description="evaluation examples the measurements read (CKA, PCs, probes, block deletion, "
                                "cross-run CKA): a class-balanced subset of the evaluation set, the same for every "
                                "model, in its fixed order; null: all of it. Accuracy and predictions always read "
                                "the whole evaluation set")
    similarity: list[MeasureChoice] = Field(
        [], description="similarity measures stored besides CKA (table similarity): names, or {name: ..., option: value}; "
                        f"registered: {', '.join(list_measures())}")
    similarity_examples: int | None = Field(
        1000, gt=3, description="evaluation examples (the first, in the fixed order) the full-batch measures read; "
                                "null: all of them")

    @field_validator("similarity")
    @classmethod
    def _distinct(cls, v):
        labels = [c.label for c in v]
        twice = sorted({x for x in labels if labels.count(x) > 1})
        if twice:
            raise ValueError(f"{', '.join(twice)} listed twice; give each measure once per set of options")
        return v

    def identity(self) -> dict:
        """What decides the probe points, their layer indices and the examples they are measured on: the key of
        `layers` (measure_id). `examples` counts only when set, so settings stored before it keep their ids."""
        unset = {"examples"} if self.examples is None else set()
        return self.model_dump(mode="json", exclude={"similarity", "similarity_examples"} | unset)

    def analysis_key(self) -> dict:
        """What an analysis's values depend on: the identity, and the similarity measures when chosen
        (so specs without them keep the analysis ids they had before measures existed)."""
        if not self.similarity:
            return self.identity()
        return {**self.identity(), "similarity": [{"name": c.name, "options": json.loads(c.options_json)} for c in self.similarity],
                "similarity_examples": self.similarity_examples}


class AnalysisSpec(BaseModel):
    """One analysis: a registered kind and its options (validated by the kind's options model)."""

    model_config = STRICT

    kind: str
    options: dict[str, Any] = {}

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v):
        return name_and_options(v, "kind")


class FamilySpec(BaseModel):
    model_config = STRICT

    name: str
    grid: dict[str, list[Any]] | list[dict[str, list[Any]]] = Field(
        {}, description="architecture parameter -> list of values (their product); a list of such mappings "
                        "declares the union of their products (e.g. a wide and a deep model)")

    @field_validator("grid", mode="before")
    @classmethod
    def _scalars_to_lists(cls, v):
        def lists(g):
            return {k: (x if isinstance(x, list) else [x]) for k, x in g.items()} if isinstance(g, dict) else g
        return [lists(g) for g in v] if isinstance(v, list) else lists(v)

    @property
    def grids(self) -> list[tuple[str, dict[str, list[Any]]]]:
        """Each product grid with its field path in the spec, for errors."""
        if isinstance(self.grid, dict):
            return [("family.grid", self.grid)]
        return [(f"family.grid[{i}]", g) for i, g in enumerate(self.grid)]


class ResourcesSpec(BaseModel):
    """What one run needs from a Ray cluster (`bench run --executor ray`); not part of any run id."""

    model_config = STRICT

    gpus: float | None = Field(None, ge=0, description="GPUs per run; null: 1 when the cluster has GPUs, else 0")
    cpus: float | None = Field(None, ge=0, description="CPU cores per run (and torch threads); null: 1")


class Spec(BaseModel):
    model_config = STRICT

    name: str = Field(description="spec name, shown in the database and on the leaderboard")
    description: str = ""
    dataset: DatasetSpec = DatasetSpec()
    family: FamilySpec
    seeds: list[int] = Field([0], description="one run per seed and architecture")
    train: TrainSpec = TrainSpec()
    measure: MeasureSpec = MeasureSpec()
    analyses: list[AnalysisSpec] = []
    resources: ResourcesSpec = ResourcesSpec()

    @field_validator("seeds", mode="before")
    @classmethod
    def _seed_list(cls, v):
        return [v] if isinstance(v, int) else v

    @field_validator("seeds")
    @classmethod
    def _nonempty(cls, v):
        if not v:
            raise ValueError("empty list; give at least one seed")
        return v


class RunConfig(BaseModel):
    """Everything that determines one trained model; its canonical JSON hashed is the run id."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    family: str
    params: dict[str, Any]
    dataset: DatasetSpec
    train: TrainSpec
    seed: int
