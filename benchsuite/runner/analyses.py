"""Per-run analyses: each kind turns a trained model into long-format rows.

`@run_analysis("kind")` registers `fn(ctx, options) -> {table: rows}`; the job calls every kind its
spec declares. Kinds that share a pass over the data read `ctx.measurement`, computed once.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

import torch.nn as nn

from benchsuite.errors import RunFailed
from benchsuite.measure import MeasureChoice, Measurement, measure_models
from benchsuite.registry import Registry
from benchsuite.train.data import PreparedData

_RUN_ANALYSES = Registry()  # kind -> fn(ctx: RunContext, options) -> {table: rows}
run_analysis = _RUN_ANALYSES.register


def per_run_kinds() -> set[str]:
    return set(_RUN_ANALYSES)


def analysis_id(kind: str, options: dict, run_ids: list[str], measure: dict) -> str:
    key = json.dumps({"kind": kind, "options": options, "runs": sorted(run_ids), "measure": measure}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


# Tables of values measured on models. A non-finite one means the model's outputs overflowed, and the run
# is not evidence; error statistics (error_classes) may be NaN by definition and are not checked.
MEASURED_TABLES = {"metrics", "cka", "pcs", "pc_scores", "pc_cosines", "blocks", "block_scores", "predictions",
                   "probes", "ablations"}


def check_finite(tables: dict[str, list[dict]], what: str) -> None:
    """Refuse rows with NaN or infinity in a measured table: they would be stored and read as results."""
    for table, rows in tables.items():
        if table in MEASURED_TABLES:
            for row in rows:
                bad = next((k for k, v in row.items() if isinstance(v, float) and not math.isfinite(v)), None)
                if bad is not None:
                    raise RunFailed(f"{what}: non-finite {table}.{bad} ({row[bad]}); the model's outputs "
                                    "overflowed, so nothing it measured is stored")


def measure_id(measure: dict) -> str:
    """A measurement setting (a spec's `measure` section: probe points, batches) as a short hash."""
    return hashlib.sha256(json.dumps(measure, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class RunContext:
    run_id: str
    model: nn.Module
    data: PreparedData
    points: list
    device: Any
    epoch: int  # the epoch of the checkpoint measured (the final one)
    similarity: list[MeasureChoice] = field(default_factory=list)  # the spec's measure.similarity
    similarity_examples: int | None = None
    examples: int | None = None  # the spec's measure.examples
    _measurement: Measurement | None = field(default=None, repr=False)

    def measure_loader(self):
        """The examples measurements read (measure.examples of the evaluation set)."""
        return self.data.eval_loader(self.device, self.examples)

    @property
    def measurement(self) -> Measurement:
        """CKA, PCs and CKA after PC1 removal, from one set of passes shared by every analysis."""
        if self._measurement is None:
            self._measurement = measure_models([self.model], [self.points], self.measure_loader(),
                                               pc1_removed=True, similarity=self.similarity,
                                               similarity_examples=self.similarity_examples)
        return self._measurement


def heatmap_rows(m, models: list[tuple[str, int]], offsets: list[int], pair_filter=lambda a, b: True,
                 **columns) -> list[dict]:
    """Long-format rows of a (P, P) matrix over the probe points of `models`, (run_id, epoch) pairs
    in the order of `offsets` (as in Measurement); `columns` are added to every row."""
    out = []
    for a, (run_a, epoch_a) in enumerate(models):
        for b, (run_b, epoch_b) in enumerate(models):
            if not pair_filter(a, b):
                continue
            for i in range(offsets[a + 1] - offsets[a]):
                row = m[offsets[a] + i]
                out += [dict(run_a=run_a, epoch_a=epoch_a, layer_a=i, run_b=run_b, epoch_b=epoch_b, layer_b=j,
                             value=float(row[offsets[b] + j]), **columns)
                        for j in range(offsets[b + 1] - offsets[b])]
    return out


def cka_rows(m, models, offsets, pc_removed: bool = False, pair_filter=lambda a, b: True) -> list[dict]:
    """Rows of table cka (the minibatch estimator) for a (P, P) CKA matrix, as heatmap_rows."""
    return heatmap_rows(m, models, offsets, pair_filter, pc_removed=pc_removed, estimator="minibatch_hsic1")


def similarity_rows(m: Measurement, choices: list[MeasureChoice], models, pair_filter=lambda a, b: True) -> list[dict]:
    """Rows of table similarity: every chosen measure's heatmap, with its name and options."""
    return [row for c in choices
            for row in heatmap_rows(m.similarity[c.label], models, m.offsets, pair_filter, measure=c.name,
                                    options=c.options_json, examples=m.similarity_examples[c.label])]


@run_analysis("cka")
def _cka(ctx: RunContext, options: dict) -> dict[str, list[dict]]:
    m = ctx.measurement
    models = [(ctx.run_id, ctx.epoch)]
    return {"cka": cka_rows(m.cka, models, m.offsets), "similarity": similarity_rows(m, ctx.similarity, models)}


@run_analysis("pcs")
def _pcs(ctx: RunContext, options: dict) -> dict[str, list[dict]]:
    m, rid = ctx.measurement, ctx.run_id
    cos = m.pc1_cosines()
    out = {
        "pcs": [dict(run_id=rid, layer=i, pc1_fraction=float(f), lambda1=float(l), total_variance=float(t))
                for i, (f, l, t) in enumerate(zip(m.pc1_fraction, m.lambda1, m.total_variance))],
        "pc_cosines": [dict(run_a=rid, layer_a=i, run_b=rid, layer_b=j, value=float(cos[i, j]))
                       for i in range(len(cos)) for j in range(len(cos))],
        "cka": cka_rows(m.cka_pc1_removed, [(rid, ctx.epoch)], m.offsets, pc_removed=True),
    }
    if options.get("scores", True):
        out["pc_scores"] = [dict(run_id=rid, layer=i, example=e, score=float(v))
                            for i, layer in enumerate(m.pc1_scores) for e, v in enumerate(layer)]
    return out


def detect(m: Measurement, options: dict):
    """Blocks of a one-model measurement, with the spec's detector thresholds."""
    from benchsuite.measure.blocks import BlockParams, detect_blocks

    return detect_blocks(m.cka, m.pc1_fraction, cka_after_pc1_removal=m.cka_pc1_removed,
                         params=BlockParams(**options))


@run_analysis("blocks")
def _blocks(ctx: RunContext, options: dict) -> dict[str, list[dict]]:
    found = detect(ctx.measurement, options)
    rows = [dict(run_id=ctx.run_id, block=k, start_layer=b.start, end_layer=b.end, size_fraction=b.size_fraction,
                 mean_cka=b.mean_cka, mean_pc1=b.mean_pc1, survives_pc1_removal=b.survives_pc1_removal, score=b.score)
            for k, b in enumerate(found)]
    summary = dict(run_id=ctx.run_id, score=sum(b.score for b in found), num_blocks=len(found),
                   largest_fraction=max((b.size_fraction for b in found), default=0.0))
    return {"blocks": rows, "block_scores": [summary]}


# Kinds defined elsewhere register themselves on import (below the registry they use).
from benchsuite.analyses import ablation, predictions, probes  # noqa: E402,F401
