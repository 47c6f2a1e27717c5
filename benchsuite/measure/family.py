"""One measurement pass over the evaluation set for any number of models at once.

Every model sees the same batches in the same order, so one MinibatchCKA holds every within- and
cross-model CKA matrix, one StreamingPCA the first PC of every probe point, and one
FullBatchSimilarity the heatmaps of the other similarity measures a spec chooses. With the first
PCs known, a last pass also gives each example's PC1 score and the CKA heatmap recomputed after
removing each probe point's PC1.
"""

from __future__ import annotations

import itertools
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from benchsuite.heap import freed_memory_kept
from benchsuite.measure.capture import FeatureCapture
from benchsuite.measure.cka import MinibatchCKA, centred_gram
from benchsuite.measure.form import FastForm
from benchsuite.measure.pca import StreamingPCA
from benchsuite.measure.similarity import FullBatchSimilarity, MeasureChoice


@dataclass
class Measurement:
    features: list[int]  # flattened feature count of each probe point
    offsets: list[int]  # model i owns probe points offsets[i]:offsets[i + 1]
    cka: np.ndarray | None = None  # (P, P) over the probe points of all models, in order
    pc1_fraction: list[float] | None = None
    lambda1: list[float] | None = None
    total_variance: list[float] | None = None
    pc1_scores: np.ndarray | None = None  # (P, N): each example's projection on its layer's first PC
    cka_pc1_removed: np.ndarray | None = None  # (P, P) after removing each probe point's first PC
    similarity: dict[str, np.ndarray] = field(default_factory=dict)  # measure label -> (P, P), as `cka`
    similarity_examples: dict[str, int] = field(default_factory=dict)  # label -> examples the measure read

    def pc1_cosines(self) -> np.ndarray:
        """Squared cosine between the first PCs of every pair of layers, as vectors over examples."""
        s = self.pc1_scores
        norms = np.linalg.norm(s, axis=1)
        c = (s @ s.T) / np.outer(norms, norms)
        return c * c


def _inputs(loader):
    """Each batch's input: from benchsuite's DeviceLoader, or any re-iterable of tensors or (input, ...)
    batches, such as a torch DataLoader."""
    for batch in loader.epoch() if hasattr(loader, "epoch") else loader:
        yield batch[0] if isinstance(batch, (tuple, list)) else batch


def _device(model: nn.Module) -> torch.device | None:
    """Where the model's tensors are; None for a model without any (its input stays where it is)."""
    t = next(itertools.chain(model.parameters(), model.buffers()), None)
    return None if t is None else t.device


def _batches(models, points, loader, amp, form: FastForm | None, reduce=None):
    """Yield the probe-point features of every model (or their `reduce`, see FeatureCapture) for each batch."""
    devices = [_device(m) for m in models]
    with ExitStack() as stack:
        captures = None
        for xb in _inputs(loader):
            xs = [xb if device is None else xb.to(device) for device in devices]
            if captures is None:  # the form's checks run on the first batch, before any probe point is hooked
                for i, x in enumerate(xs):
                    if form is not None:
                        form.prepare(i, x)
                captures = [stack.enter_context(FeatureCapture(m, p, reduce=reduce)) for m, p in zip(models, points)]
            feats = []
            for model, cap, x in zip(models, captures, xs):
                with torch.autocast(x.device.type, dtype=amp) if amp else nullcontext():
                    model(x)
                feats += cap.features
            yield feats


def _size_and_gram(x: torch.Tensor) -> tuple[int, torch.Tensor]:
    return x[0].numel(), centred_gram(x)


def measure_models(models: Sequence[nn.Module], points: Sequence[Sequence], loader, *, cka: bool = True,
                   pcs: bool = True, pc1_removed: bool = False, amp: torch.dtype | None = None,
                   similarity: Sequence[MeasureChoice] = (), similarity_examples: int | None = None,
                   as_given: bool = False) -> Measurement:
    """CKA between every pair of probe points of `models` and the first PC of each.

    `loader`: a DeviceLoader or any re-iterable of batches (each a tensor, or a tuple whose first item is
    the input), read once per pass. `pc1_removed` (implies `pcs`) adds the PC1 scores and the CKA heatmap
    after PC1 removal; `similarity` the heatmaps of those measures, the full-batch ones on the first
    `similarity_examples`. Models are put in eval mode and, unless `as_given`, run in the faster
    equivalent form of FastForm (BatchNorms folded, CPU convolutions channels-last) while measured. While
    measuring, the process keeps the memory torch frees for the next batch (benchsuite.heap.freed_memory_kept).
    """
    for m in models:
        m.eval()
    with freed_memory_kept(), nullcontext() if as_given else FastForm(models, points) as form:
        return _measure(models, points, loader, form, cka=cka, pcs=pcs, pc1_removed=pc1_removed, amp=amp,
                        similarity=similarity, similarity_examples=similarity_examples)


@torch.inference_mode()
def _measure(models, points, loader, form, *, cka, pcs, pc1_removed, amp, similarity, similarity_examples) -> Measurement:
    cka = cka or any(c.streaming for c in similarity)
    pcs = pcs or pc1_removed
    out = Measurement(features=[], offsets=np.cumsum([0] + [len(p) for p in points]).tolist())
    pca = StreamingPCA() if pcs else None
    while pca is not None and not pca.done:
        for feats in _batches(models, points, loader, amp, form):
            pca.update(feats)
        pca.end_pass()
    acc = MinibatchCKA() if cka else None
    removed = MinibatchCKA() if pc1_removed else None
    full = FullBatchSimilarity(similarity, similarity_examples) if any(not c.streaming for c in similarity) else None
    # Only grams needed: each activation becomes its gram as it arrives, so a batch never holds them all.
    grams_only = acc is not None and removed is None and full is None
    scores: list[list[torch.Tensor]] = []
    for feats in _batches(models, points, loader, amp, form, reduce=_size_and_gram if grams_only else None):
        if grams_only:
            out.features = out.features or [d for d, _ in feats]
            acc.update_grams([g for _, g in feats])
            continue
        out.features = out.features or [int(f[0].numel()) for f in feats]
        if acc is None and removed is None and full is None:
            break
        if acc is not None:
            acc.update(feats)
        if full is not None:
            full.update(feats)
        if removed is not None:
            flat = [f.flatten(1).to("cpu", torch.float64) for f in feats]
            s = [(x - mu) @ v for x, mu, v in zip(flat, pca.means, pca.pc1_directions)]
            removed.update([x - si[:, None] * v[None, :] for x, si, v in zip(flat, s, pca.pc1_directions)])
            scores.append(torch.stack(s))
    if acc is not None:
        out.cka = acc.compute().cpu().numpy()
    if full is not None:
        out.similarity = full.compute()
    for c in similarity:
        if c.streaming:
            out.similarity[c.label] = out.cka
        out.similarity_examples[c.label] = acc.examples if c.streaming else full.seen
    if pca is not None:
        out.pc1_fraction = pca.pc1_fraction
        out.lambda1 = [layer.lambda1 for layer in pca.layers]
        out.total_variance = [layer.total_variance for layer in pca.layers]
    if removed is not None:
        out.cka_pc1_removed = removed.compute().cpu().numpy()
        out.pc1_scores = torch.cat(scores, dim=1).numpy()
    return out
