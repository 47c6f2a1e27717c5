"""First principal component of every probe point over the evaluation set, in bounded memory.

Per layer with d features over N examples (centred over examples), we need lambda_1 / sum(lambda).
sum(lambda) is the trace of the covariance, accumulated in one pass. For lambda_1:
- d <= `exact_dim`: accumulate the d x d covariance in float64 (one pass, exact eigvalsh);
- wider layers: block subspace iteration with `rank` vectors, one pass over the data per
  iteration (memory d x rank), until the PC1 fraction moves by less than `tol` between passes
  (the Ritz value converges like (lambda_{rank+1} / lambda_1)^(2 t), fast when PC1 dominates).
Neither keeps an N x d matrix, so memory is independent of the number of examples.
"""

from __future__ import annotations

from typing import Sequence

import torch


class _Layer:
    def __init__(self, d: int, exact: bool):
        self.d, self.exact = d, exact
        self.n = 0
        self.sum = torch.zeros(d, dtype=torch.float64)
        self.sumsq = torch.zeros((), dtype=torch.float64)
        self.cov = torch.zeros(d, d, dtype=torch.float64) if exact else None
        self.q: torch.Tensor | None = None  # current subspace (d, rank)
        self.y: torch.Tensor | None = None  # accumulating C q
        self.ritz = float("nan")
        self.v1: torch.Tensor | None = None
        self.lambda1 = float("nan")
        self.done = False

    @property
    def mean(self) -> torch.Tensor:
        return self.sum / self.n

    @property
    def total_variance(self) -> float:
        return float(self.sumsq - self.n * (self.mean @ self.mean))


class StreamingPCA:
    """Multi-pass first-PC estimator. Use as::

        pca = StreamingPCA()
        while not pca.done:
            for batch in eval_batches:
                pca.update(features_of(batch))   # list of (n, ...) tensors, one per probe point
            pca.end_pass()
        pca.pc1_fraction   # list of floats, one per probe point
    """

    def __init__(self, exact_dim: int = 2048, rank: int = 8, tol: float = 1e-6, max_iter: int = 30, seed: int = 0):
        self.exact_dim, self.rank, self.tol, self.max_iter = exact_dim, rank, tol, max_iter
        self.generator = torch.Generator().manual_seed(seed)
        self.layers: list[_Layer] | None = None
        self.passes = 0

    @property
    def done(self) -> bool:
        return self.layers is not None and self.passes > 0 and all(layer.done for layer in self.layers)

    def update(self, features: Sequence[torch.Tensor]) -> None:
        xs = [f.detach().flatten(1).to("cpu", torch.float64) for f in features]
        if self.layers is None:
            self.layers = [_Layer(x.shape[1], x.shape[1] <= self.exact_dim) for x in xs]
        for layer, x in zip(self.layers, xs):
            if self.passes == 0:
                layer.n += x.shape[0]
                layer.sum += x.sum(0)
                layer.sumsq += (x * x).sum()
                if layer.exact:
                    layer.cov += x.T @ x
            elif not layer.done:
                layer.y += x.T @ (x @ layer.q)

    def end_pass(self) -> None:
        for layer in self.layers or []:
            if layer.done:
                continue
            if self.passes == 0:
                self._first_pass_done(layer)
            else:
                self._iterate(layer)
        self.passes += 1

    def _first_pass_done(self, layer: _Layer) -> None:
        mu = layer.mean
        if layer.exact:
            cov = layer.cov - layer.n * torch.outer(mu, mu)
            vals, vecs = torch.linalg.eigh(cov)
            layer.lambda1, layer.v1 = float(vals[-1]), vecs[:, -1]
            layer.cov, layer.done = None, True
            return
        q = torch.randn(layer.d, min(self.rank, layer.d), generator=self.generator, dtype=torch.float64)
        layer.q = torch.linalg.qr(q).Q
        layer.y = torch.zeros_like(layer.q)

    def _iterate(self, layer: _Layer) -> None:
        mu = layer.mean
        cy = layer.y - layer.n * torch.outer(mu, mu @ layer.q)  # C q with C the centred scatter
        small = layer.q.T @ cy
        vals, vecs = torch.linalg.eigh((small + small.T) / 2)
        ritz = float(vals[-1])
        converged = abs(ritz - layer.ritz) <= self.tol * max(layer.total_variance, 1e-300)
        layer.ritz = ritz
        layer.v1 = layer.q @ vecs[:, -1]
        layer.lambda1 = ritz
        if converged or self.passes >= self.max_iter:
            layer.done, layer.q, layer.y = True, None, None
            return
        layer.q = torch.linalg.qr(cy).Q
        layer.y = torch.zeros_like(layer.q)

    @property
    def pc1_fraction(self) -> list[float]:
        out = []
        for layer in self.layers or []:
            total = layer.total_variance
            out.append(layer.lambda1 / total if total > 0 else float("nan"))
        return out

    @property
    def pc1_directions(self) -> list[torch.Tensor]:
        return [layer.v1 for layer in self.layers or []]

    @property
    def means(self) -> list[torch.Tensor]:
        return [layer.mean for layer in self.layers or []]
