"""Linear probes (kind `probes`): how linearly decodable the labels are at every probe point.

Features of the frozen model (eval mode) are read at each probe point, average-pooled over spatial
positions (or flattened), standardised with the training features' mean and standard deviation, and
a multinomial logistic regression with an L2 penalty is fit by full-batch L-BFGS on the run's
training subset (normalised as the training loader does, no augmentation). Accuracy is measured on
the fixed evaluation set. Everything runs on the run's device.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from benchsuite.analyses.options import ProbeOptions
from benchsuite.data.loader import DeviceLoader
from benchsuite.measure import FeatureCapture
from benchsuite.runner.analyses import RunContext, run_analysis


def pool(features: torch.Tensor, pooling: str) -> torch.Tensor:
    """(n, C, H, W) or (n, d) activations -> (n, features) probe inputs."""
    if pooling == "avg" and features.ndim > 2:
        features = features.mean(dim=tuple(range(2, features.ndim)))
    return features.flatten(1).float()


@torch.no_grad()  # not inference_mode: the probe's autograd must be able to save these tensors
def probe_features(model: nn.Module, points, loader: DeviceLoader, pooling: str) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Pooled features of every probe point over a loader, and the labels, in the loader's order."""
    model.eval()
    per_point: list[list[torch.Tensor]] = [[] for _ in points]
    labels = []
    with FeatureCapture(model, points) as cap:
        for xb, yb in loader.epoch():
            model(xb)
            for acc, f in zip(per_point, cap.features):
                acc.append(pool(f, pooling))
            labels.append(yb)
    return [torch.cat(f) for f in per_point], torch.cat(labels)


def fit_linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, eval_x: torch.Tensor, eval_y: torch.Tensor,
                     num_classes: int, *, l2: float = 1e-3, max_iter: int = 200) -> tuple[float, float]:
    """Training and evaluation accuracy of an L2-penalised logistic regression on standardised features."""
    mean, std = train_x.mean(0), train_x.std(0)
    std = torch.where(std > 0, std, torch.ones_like(std))  # a constant feature stays at 0
    xt, xe = (train_x - mean) / std, (eval_x - mean) / std
    w = torch.zeros(xt.shape[1], num_classes, device=xt.device, requires_grad=True)
    b = torch.zeros(num_classes, device=xt.device, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-6, tolerance_change=1e-9)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(xt @ w + b, train_y) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        train_acc = ((xt @ w + b).argmax(1) == train_y).float().mean()
        eval_acc = ((xe @ w + b).argmax(1) == eval_y).float().mean()
    return float(train_acc), float(eval_acc)


@run_analysis("probes")
def _probes(ctx: RunContext, options: dict) -> dict[str, list[dict]]:
    opts = ProbeOptions.model_validate(options)
    d = ctx.data
    train_loader = DeviceLoader(d.train_x, d.train_y, batch_size=d.eval_batch_size, mean=d.mean, std=d.std,
                                device=ctx.device, shuffle=False)
    train_feats, train_y = probe_features(ctx.model, ctx.points, train_loader, opts.pooling)
    eval_feats, eval_y = probe_features(ctx.model, ctx.points, ctx.measure_loader(), opts.pooling)
    rows = []
    for layer in range(len(ctx.points)):
        train_acc, acc = fit_linear_probe(train_feats[layer], train_y, eval_feats[layer], eval_y, d.num_classes,
                                          l2=opts.l2, max_iter=opts.max_iter)
        train_feats[layer] = eval_feats[layer] = None  # free each layer's features once probed
        rows.append(dict(run_id=ctx.run_id, layer=layer, accuracy=acc, train_accuracy=train_acc))
    return {"probes": rows}
