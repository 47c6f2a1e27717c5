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

accuracy_drop is the intact model's accuracy minus the ablated one's (both fp32). Where the skippable
blocks form a chain (each one's input the previous one's output, as residual stages do), a deletion
restarts from the intact input of its first deleted block instead of recomputing the blocks before it:
the same arithmetic as the whole forward pass, so the same accuracies to the bit, in about half the time.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn as nn

from benchsuite.analyses.options import AblationOptions
from benchsuite.runner.analyses import RunContext, detect, run_analysis


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


@contextmanager
def _starting_from(before: list[Skippable], h: torch.Tensor):
    """The blocks `before` a deletion bypassed: the first outputs `h` (the intact input of the block after
    them), the others pass it on. The layers before the first block still run; their output is unused."""
    for i, b in enumerate(before):
        b.module.forward = (lambda *args, **kwargs: h) if i == 0 else (lambda x, *args, **kwargs: x)
    try:
        yield
    finally:
        for b in before:
            del b.module.forward


def _intact_pass(model: nn.Module, blocks: list[Skippable], xb: torch.Tensor):
    """The intact logits, the first block's input, and whether each block's input was the previous one's output."""
    seen = {"first": None, "last_out": None, "chained": True}

    def pre_hook(i):
        def hook(module, args):
            if i == 0:
                seen["first"] = args[0]
            elif args[0] is not seen["last_out"] or len(args) != 1:
                seen["chained"] = False
        return hook

    def hook(module, args, output):
        seen["last_out"] = output

    handles = [h for i, b in enumerate(blocks)
               for h in (b.module.register_forward_pre_hook(pre_hook(i)), b.module.register_forward_hook(hook))]
    try:
        logits = model(xb)
    finally:
        for h in handles:
            h.remove()
    return logits, seen["first"], seen["chained"]


@torch.inference_mode()
def deletion_accuracies(model: nn.Module, blocks: list[Skippable], deletions: list[list[Skippable]],
                        loader) -> tuple[float, list[float]]:
    """Accuracy of the intact model and with each deletion's blocks skipped together, in eval mode, fp32."""
    model.eval()
    order = {id(b.module): i for i, b in enumerate(blocks)}
    firsts = [min(order[id(b.module)] for b in d) for d in deletions]
    schedule = sorted(range(len(deletions)), key=firsts.__getitem__)
    intact, correct, n = 0, [0] * len(deletions), 0
    for xb, yb in loader.epoch():
        logits, h, chained = _intact_pass(model, blocks, xb)
        intact += int((logits.argmax(1) == yb).sum())
        pos = 0  # h is the intact input of blocks[pos]
        for d in schedule:
            start = firsts[d] if chained else 0
            while pos < start:
                h = blocks[pos].module(h)
                pos += 1
            with _starting_from(blocks[:start], h), skipped(deletions[d]):
                correct[d] += int((model(xb).argmax(1) == yb).sum())
        n += len(yb)
    return intact / n, [c / n for c in correct]


@run_analysis("ablation")
def _ablation(ctx: RunContext, options: dict) -> dict[str, list[dict]]:
    opts = AblationOptions.model_validate(options)
    blocks = skippable_blocks(ctx.model, ctx.points)
    if not blocks:
        return {"ablations": []}
    own_point = {p.module: p.name for p in ctx.points}
    targets = [(own_point.get(b.name, b.name), [b], min(b.layers, default=None), max(b.layers, default=None))
               for b in blocks]
    for s in detect(ctx.measurement, opts.detector.model_dump()):
        inside = [b for b in blocks if b.layers and s.start <= min(b.layers) and max(b.layers) <= s.end]
        if inside:
            targets.append((f"block:{s.start}-{s.end}", inside, s.start, s.end))
    intact, accuracies = deletion_accuracies(ctx.model, blocks, [t[1] for t in targets], ctx.measure_loader())
    return {"ablations": [dict(run_id=ctx.run_id, target=target, start_layer=start, end_layer=end, accuracy=acc,
                               accuracy_drop=intact - acc)
                          for (target, _, start, end), acc in zip(targets, accuracies)]}
