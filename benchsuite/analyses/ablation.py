"""Block deletion (kind `ablation`): does a residual block, or a whole block structure, do useful work?

A model opts in by giving its residual blocks a boolean `skip_branch` attribute: when it is set, the
block outputs what its shortcut alone gives (cifar_resnet's BasicBlock: relu(shortcut(x))). A model
without such modules (another family) yields no rows. Accuracy on the evaluation set is measured
again without retraining:

- each skippable block alone: target = the name of the probe point at the block's output (the
  module name when no probe point is the block itself), start/end_layer = the probe points inside it;
- each detected block structure (measure.blocks.detect_blocks on the run's CKA heatmap and PC1
  fractions): every skippable block whose probe points all lie in [start, end] skipped at once,
  target "block:START-END"; a structure with no skippable block inside (e.g. the stem alone) is left out.

accuracy_drop is the intact model's accuracy minus the ablated one's (both fp32).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch.nn as nn

from benchsuite.analyses.options import AblationOptions
from benchsuite.runner.analyses import RunContext, detect, run_analysis
from benchsuite.train import evaluate


@dataclass
class Skippable:
    name: str  # module name
    module: nn.Module
    layers: list[int]  # indices of the probe points inside the module (or the module itself)


def skippable_blocks(model: nn.Module, points) -> list[Skippable]:
    """Modules with a `skip_branch` flag, in forward order, with the probe points they contain."""
    return [Skippable(name, m, [i for i, p in enumerate(points) if p.module == name or p.module.startswith(name + ".")])
            for name, m in model.named_modules() if isinstance(getattr(m, "skip_branch", None), bool)]


@contextmanager
def skipped(blocks: list[Skippable]):
    """Skip the residual branches of `blocks` inside the context; restored afterwards, even on error."""
    for b in blocks:
        b.module.skip_branch = True
    try:
        yield
    finally:
        for b in blocks:
            b.module.skip_branch = False


@run_analysis("ablation")
def _ablation(ctx: RunContext, options: dict) -> dict[str, list[dict]]:
    opts = AblationOptions.model_validate(options)
    blocks = skippable_blocks(ctx.model, ctx.points)
    if not blocks:
        return {"ablations": []}
    loader = ctx.measure_loader()
    intact = evaluate(ctx.model, loader, None)[1]

    def row(target: str, deleted: list[Skippable], start: int | None, end: int | None) -> dict:
        with skipped(deleted):
            acc = evaluate(ctx.model, loader, None)[1]
        return dict(run_id=ctx.run_id, target=target, start_layer=start, end_layer=end, accuracy=acc,
                    accuracy_drop=intact - acc)

    own_point = {p.module: p.name for p in ctx.points}
    rows = [row(own_point.get(b.name, b.name), [b], min(b.layers, default=None), max(b.layers, default=None))
            for b in blocks]
    for s in detect(ctx.measurement, opts.detector.model_dump()):
        inside = [b for b in blocks if b.layers and s.start <= min(b.layers) and max(b.layers) <= s.end]
        if inside:
            rows.append(row(f"block:{s.start}-{s.end}", inside, s.start, s.end))
    return {"ablations": rows}
