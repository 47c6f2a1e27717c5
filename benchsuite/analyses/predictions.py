"""Per-example predictions on the fixed evaluation set (kind `predictions`).

`example` is the position in the evaluation order (benchsuite.data.eval_order), the same for every
run of a dataset spec, so predictions of different runs line up example by example.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from benchsuite.data.loader import DeviceLoader
from benchsuite.runner.analyses import RunContext, run_analysis


@torch.inference_mode()
def predict(model: nn.Module, loader: DeviceLoader) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, predicted classes and confidences (max softmax probability), in the loader's order."""
    model.eval()
    labels, preds, confs = [], [], []
    for xb, yb in loader.epoch():
        conf, pred = model(xb).float().softmax(1).max(1)
        labels.append(yb.cpu())
        preds.append(pred.cpu())
        confs.append(conf.cpu())
    return torch.cat(labels).numpy(), torch.cat(preds).numpy(), torch.cat(confs).numpy()


@run_analysis("predictions")
def _predictions(ctx: RunContext, options: dict) -> dict[str, list[dict]]:
    labels, preds, confs = predict(ctx.model, ctx.data.eval_loader(ctx.device))
    return {"predictions": [dict(run_id=ctx.run_id, example=i, label=int(y), prediction=int(p), confidence=float(c))
                            for i, (y, p, c) in enumerate(zip(labels, preds, confs))]}
