"""Per-run analyses: each kind turns a trained model into long-format rows.

`@run_analysis("kind")` registers `fn(ctx, options) -> {table: rows}`; the job calls every kind its
spec declares. Kinds that share a pass over the data read `ctx.measurement`, computed once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Callable

import torch.nn as nn

from benchsuite.measure import Measurement, measure_models
from benchsuite.train.data import PreparedData

_RUN_ANALYSES: dict[str, Callable[["RunContext", dict], dict[str, list[dict]]]] = {}


def run_analysis(kind: str):
    def wrap(fn):
        _RUN_ANALYSES[kind] = fn
        return fn
    return wrap


def per_run_kinds() -> set[str]:
    return set(_RUN_ANALYSES)


def analysis_id(kind: str, options: dict, run_ids: list[str], measure: dict) -> str:
    key = json.dumps({"kind": kind, "options": options, "runs": sorted(run_ids), "measure": measure}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


@dataclass
class RunContext:
    run_id: str
    model: nn.Module
    data: PreparedData
    points: list
    device: Any
    kinds: set[str]  # every per-run kind this job computes, so shared passes do all at once
    _measurement: Measurement | None = field(default=None, repr=False)

    @property
    def measurement(self) -> Measurement:
        if self._measurement is None:
            self._measurement = measure_models([self.model], [self.points], self.data.eval_loader(self.device),
                                               cka="cka" in self.kinds, pcs="pcs" in self.kinds)
        return self._measurement


@run_analysis("cka")
def _cka(ctx: RunContext, options: dict) -> dict[str, list[dict]]:
    m = ctx.measurement.cka
    n = len(m)
    return {"cka": [dict(run_a=ctx.run_id, layer_a=i, run_b=ctx.run_id, layer_b=j, pc_removed=False,
                         value=float(m[i, j]), estimator="minibatch_hsic1") for i in range(n) for j in range(n)]}


@run_analysis("pcs")
def _pcs(ctx: RunContext, options: dict) -> dict[str, list[dict]]:
    m = ctx.measurement
    return {"pcs": [dict(run_id=ctx.run_id, layer=i, pc1_fraction=float(f), lambda1=float(l), total_variance=float(t))
                    for i, (f, l, t) in enumerate(zip(m.pc1_fraction, m.lambda1, m.total_variance))]}
