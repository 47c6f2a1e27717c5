"""One measurement pass over the evaluation set for any number of models at once.

Every model sees the same batches in the same order, so one MinibatchCKA holds every within- and
cross-model CKA matrix, and one StreamingPCA the first PC of every probe point.
"""

from __future__ import annotations

from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from benchsuite.measure.capture import FeatureCapture
from benchsuite.measure.cka import MinibatchCKA
from benchsuite.measure.pca import StreamingPCA


@dataclass
class Measurement:
    cka: np.ndarray | None  # (P, P) over the probe points of all models, in order
    pc1_fraction: list[float] | None
    lambda1: list[float] | None
    total_variance: list[float] | None
    features: list[int]  # flattened feature count of each probe point
    offsets: list[int]  # model i owns rows offsets[i]:offsets[i + 1]


def _batches(models, captures, loader, amp):
    """Yield the probe-point features of every model for each evaluation batch."""
    for xb, _ in loader.epoch():
        feats = []
        for model, cap in zip(models, captures):
            with torch.autocast(xb.device.type, dtype=amp) if amp else nullcontext():
                model(xb)
            feats += cap.features
        yield feats


@torch.inference_mode()
def measure_models(models: Sequence[nn.Module], points: Sequence[Sequence], loader, *, cka: bool = True,
                   pcs: bool = True, amp: torch.dtype | None = None) -> Measurement:
    """CKA between every pair of probe points of `models` and the PC1 fraction of each."""
    for m in models:
        m.eval()
    offsets = np.cumsum([0] + [len(p) for p in points]).tolist()
    with ExitStack() as stack:
        captures = [stack.enter_context(FeatureCapture(m, p)) for m, p in zip(models, points)]
        pca = StreamingPCA() if pcs else None
        acc = MinibatchCKA() if cka else None
        while pca is not None and not pca.done:
            for feats in _batches(models, captures, loader, amp):
                pca.update(feats)
            pca.end_pass()
        features: list[int] = []
        for feats in _batches(models, captures, loader, amp):
            features = features or [int(f[0].numel()) for f in feats]
            if acc is None:
                break
            acc.update(feats)
    return Measurement(
        cka=acc.compute().cpu().numpy() if acc else None,
        pc1_fraction=pca.pc1_fraction if pca else None,
        lambda1=[layer.lambda1 for layer in pca.layers] if pca else None,
        total_variance=[layer.total_variance for layer in pca.layers] if pca else None,
        features=features, offsets=offsets,
    )
