"""Similarity measures between representations: a registry, a functional form, a family form.

Each measure turns one probe point's features (n examples, flattened) into a *state*, then compares
two states. The functional form, `get_measure(name)(x, y, **options)`, prepares and compares two
feature matrices; the family form, `FullBatchSimilarity`, prepares every probe point of every model
once and fills the (P, P) heatmap of every pair, within and across models, like `MinibatchCKA`.
Both run the same code, in float64.

Many measures are normalised inner products of a per-point vector (a centred kernel, a kNN mask, a
standardised RDM), so their heatmap is one matrix product of the stacked vectors; the CCA family and
Procrustes compare singular bases pair by pair.

| measure | value | reads |
| --- | --- | --- |
| linear_cka | Kornblith et al. 2019, <K, L> / (|K| |L|) of centred linear Grams (`full`); U-centred HSIC_1 (`debiased`); the minibatch estimator of Nguyen et al. 2021 (`minibatch`, the `cka` table's value) | n x n Gram |
| rbf_cka | CKA of RBF kernels, sigma = `bandwidth` x sqrt(median squared distance) (Kornblith's notebook, median over all n^2 pairs) | n x n distances |
| cca | mean squared canonical correlation (R^2_CCA of Kornblith et al. 2019) | SVD of X |
| svcca | mean canonical correlation after keeping each side's top singular directions explaining `variance` (Raghu et al. 2017) | SVD of X |
| pwcca | canonical correlations weighted by how much of the first representation each canonical variate accounts for (Morcos et al. 2018); not symmetric | SVD of X, X |
| procrustes | orthogonal Procrustes distance 2 - 2 ||X^T Y||_* of centred, unit-Frobenius X, Y (Ding et al. 2021); lower is more similar | SVD of X |
| mutual_knn | mean fraction of shared k nearest neighbours (Huh et al. 2024) | n x n similarities |
| rsa | Pearson or Spearman correlation of the RDMs' upper triangles (Kriegeskorte et al. 2008) | n x n distances |

Features are centred over examples first for every measure except `mutual_knn` with the cosine
metric, which, like Huh et al., compares the raw feature vectors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable, Literal, Sequence

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from benchsuite.measure.cka import gram, u_centre
from benchsuite.registry import Registry, name_and_options


class Features:
    """One probe point's features (n, d) in float64, with the pieces measures share computed once."""

    def __init__(self, x):
        x = torch.as_tensor(x) if not isinstance(x, torch.Tensor) else x
        self.raw = x.detach().flatten(1).to(torch.float64)
        self.n = self.raw.shape[0]

    @cached_property
    def centred(self) -> torch.Tensor:
        return self.raw - self.raw.mean(0, keepdim=True)

    @cached_property
    def gram(self) -> torch.Tensor:
        return gram(self.raw)  # of the centred features

    @cached_property
    def sq_distances(self) -> torch.Tensor:
        k = self.gram
        d = k.diagonal()
        return (d[:, None] + d[None, :] - 2 * k).clamp_min(0)

    @cached_property
    def svd(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Left singular vectors and singular values of the centred features, numerical rank only."""
        x = self.centred
        # the smaller side's eigendecomposition is the SVD's costly part; via the Gram when d > n
        if x.shape[1] > x.shape[0]:
            vals, vecs = torch.linalg.eigh(self.gram)
            s, u = vals.clamp_min(0).sqrt().flip(0), vecs.flip(1)
        else:
            u, s, _ = torch.linalg.svd(x, full_matrices=False)
        keep = s > (s[0] if s.numel() else 0) * max(x.shape) * torch.finfo(torch.float64).eps * 10
        return u[:, keep], s[keep]

    def top(self, variance: float | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The singular directions explaining at least `variance` of the total (all of them for None)."""
        u, s = self.svd
        if variance is None:
            return u, s
        share = torch.cumsum(s * s, 0) / (s * s).sum()
        k = int(torch.searchsorted(share, torch.tensor(variance, dtype=share.dtype) - 1e-12)) + 1
        return u[:, :k], s[:k]


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Measure:
    """A registered measure. `prepare(features, options)` gives a point's state; `compare(a, b, options)`
    the value. With `vector` the state is a unit vector and the value its dot product with another."""

    name: str
    options: type[_Options]
    prepare: Callable[[Features, Any], Any]
    compare: Callable[[Any, Any, Any], float] | None = None
    vector: bool = False
    symmetric: bool = True
    higher_is_better: bool = True
    as_similarity: Callable[[np.ndarray], np.ndarray] = staticmethod(lambda v: v)  # higher = more alike
    doc: str = ""

    def __call__(self, x, y, **options) -> float:
        """The measure between two feature matrices (n, ...) of the same n examples, NumPy or torch."""
        opts = self.options(**options)
        fx, fy = Features(x), Features(y)
        if fx.n != fy.n:
            raise ValueError(f"x and y need the same number of examples, got {fx.n} and {fy.n}")
        a, b = self.prepare(fx, opts), self.prepare(fy, opts)
        return float(a @ b) if self.vector else float(self.compare(a, b, opts))

    def heatmap(self, states: list, opts) -> np.ndarray:
        """(P, P) values between every pair of prepared states; row a, column b is measure(a, b)."""
        if self.vector:
            g = torch.stack(states)
            m = g @ g.T
            return ((m + m.T) / 2).cpu().numpy()
        p = len(states)
        out = np.empty((p, p))
        for i in range(p):
            for j in range(i if self.symmetric else 0, p):
                out[i, j] = self.compare(states[i], states[j], opts)
                if self.symmetric:
                    out[j, i] = out[i, j]
        return out


_MEASURES = Registry()  # name -> Measure


def register_measure(name: str, options: type[_Options], **kw):
    def wrap(prepare):
        _MEASURES[name] = Measure(name, options, prepare, doc=(prepare.__doc__ or "").strip(), **kw)
        return prepare
    return wrap


def list_measures() -> list[str]:
    return sorted(_MEASURES)


def get_measure(name: str) -> Measure:
    if name not in _MEASURES:
        raise KeyError(f"unknown similarity measure {name!r}; allowed: {', '.join(list_measures())}")
    return _MEASURES[name]


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v.flatten() / torch.linalg.vector_norm(v)


# ---- kernel measures: CKA ----------------------------------------------------------------------

def _centred_kernel(k: torch.Tensor, debiased: bool) -> torch.Tensor:
    if debiased:
        if k.shape[0] <= 3:
            raise ValueError("debiased CKA needs at least 4 examples")
        return u_centre(k)
    return k - k.mean(0, keepdim=True) - k.mean(1, keepdim=True) + k.mean()


class LinearCKAOptions(_Options):
    estimator: Literal["minibatch", "full", "debiased"] = Field(
        "minibatch", description="minibatch: Nguyen et al. eq. 2 over the evaluation batches (the cka table); "
                                 "full: Kornblith et al.'s biased HSIC on the full batch; debiased: unbiased HSIC_1 on it")


@register_measure("linear_cka", LinearCKAOptions, vector=True)
def _linear_cka(f: Features, o: LinearCKAOptions):
    """Linear CKA. The functional form sees one batch, where `minibatch` equals `debiased`."""
    return _unit(_centred_kernel(f.gram, o.estimator != "full"))


class RBFCKAOptions(_Options):
    bandwidth: float = Field(0.8, gt=0, description="sigma as a fraction of the median pairwise distance")
    debiased: bool = Field(False, description="unbiased HSIC_1 instead of the biased HSIC")


@register_measure("rbf_cka", RBFCKAOptions, vector=True)
def _rbf_cka(f: Features, o: RBFCKAOptions):
    """CKA of Gaussian kernels; the median is over all n^2 squared distances, zeros included (Kornblith)."""
    d = f.sq_distances
    sigma2 = o.bandwidth ** 2 * float(np.median(d.cpu().numpy()))  # torch.median takes the lower middle value
    return _unit(_centred_kernel(torch.exp(-d / (2 * sigma2)), o.debiased))


# ---- CCA family and Procrustes: singular bases ------------------------------------------------

class NoOptions(_Options):
    pass


def _canonical(a: torch.Tensor, b: torch.Tensor):
    """Canonical correlations of two orthonormal bases, with the first side's canonical directions."""
    ua, rho, _ = torch.linalg.svd(a.T @ b, full_matrices=False)
    return ua, rho.clamp(0, 1)


@register_measure("cca", NoOptions, compare=lambda a, b, o: float((a.T @ b).square().sum() / min(a.shape[1], b.shape[1])))
def _cca(f: Features, o: NoOptions):
    """Mean squared canonical correlation, over min(rank X, rank Y) correlations (all 1 once rank >= n - 1)."""
    return f.svd[0]


class SVCCAOptions(_Options):
    variance: float = Field(0.99, gt=0, le=1, description="keep the top singular directions explaining this fraction")


@register_measure("svcca", SVCCAOptions, compare=lambda a, b, o: float(_canonical(a, b)[1].mean()))
def _svcca(f: Features, o: SVCCAOptions):
    """Mean canonical correlation between the top singular subspaces of X and Y."""
    return f.top(o.variance)[0]


class PWCCAOptions(_Options):
    variance: float | None = Field(
        0.99, gt=0, le=1, description="CCA on the top singular directions explaining this fraction (weights read "
                                      "over those PCs); null: on the raw features, as Morcos et al. (degenerate once d >= n)")


def _pwcca_compare(a, b, o) -> float:
    (qa, za), (qb, _) = a, b
    dirs, rho = _canonical(qa, qb)
    h = qa @ dirs  # first side's canonical variates, orthonormal (n, m)
    alpha = (h.T @ za).abs().sum(1)  # each variate's summed |correlation| with the features (Morcos eq. 3)
    return float((alpha * rho).sum() / alpha.sum())


@register_measure("pwcca", PWCCAOptions, compare=_pwcca_compare, symmetric=False)
def _pwcca(f: Features, o: PWCCAOptions):
    """Projection-weighted CCA of X by Y. Not symmetric: the weights are X's."""
    if o.variance is None:
        return f.svd[0], f.centred
    u, s = f.top(o.variance)
    return u, u * s  # the features in PC coordinates


@register_measure("procrustes", NoOptions, higher_is_better=False, as_similarity=lambda d: 1 - d / 2,
                  compare=lambda a, b, o: float(2 - 2 * torch.linalg.svdvals(a.T @ b).sum()))
def _procrustes(f: Features, o: NoOptions):
    """Squared orthogonal Procrustes distance of centred, unit-Frobenius-norm features, in [0, 2]."""
    u, s = f.svd
    return u * (s / torch.linalg.vector_norm(s))  # X up to a rotation, which the distance ignores


# ---- neighbourhoods and dissimilarity matrices ------------------------------------------------

class KNNOptions(_Options):
    k: int = Field(10, ge=1, description="neighbours per example")
    metric: Literal["cosine", "euclidean"] = Field(
        "cosine", description="cosine of raw features (Huh et al.), or Euclidean distance of centred ones")


@register_measure("mutual_knn", KNNOptions, vector=True)
def _mutual_knn(f: Features, o: KNNOptions):
    """Mean over examples of |kNN_X(i) & kNN_Y(i)| / k, neighbours excluding the example itself."""
    if o.k >= f.n:
        raise ValueError(f"mutual_knn needs more than k={o.k} examples, got {f.n}")
    if o.metric == "cosine":
        x = f.raw / torch.linalg.vector_norm(f.raw, dim=1, keepdim=True).clamp_min(1e-300)
        score = x @ x.T
    else:
        score = -f.sq_distances
    score.fill_diagonal_(-torch.inf)
    idx = torch.sort(score, dim=1, descending=True, stable=True).indices[:, :o.k]
    mask = torch.zeros_like(score).scatter_(1, idx, 1.0)
    return mask.flatten() / (f.n * o.k) ** 0.5


class RSAOptions(_Options):
    method: Literal["pearson", "spearman"] = Field("pearson", description="correlation of the two RDMs")
    rdm: Literal["euclidean", "correlation"] = Field(
        "euclidean", description="dissimilarity: squared Euclidean distance (rsatoolbox's default) or 1 - Pearson r")


@register_measure("rsa", RSAOptions, vector=True)
def _rsa(f: Features, o: RSAOptions):
    """Correlation between the upper triangles of the two representational dissimilarity matrices."""
    if o.rdm == "euclidean":
        d = f.sq_distances
    else:
        z = f.raw - f.raw.mean(1, keepdim=True)
        z = z / torch.linalg.vector_norm(z, dim=1, keepdim=True)
        d = 1 - z @ z.T
    i, j = torch.triu_indices(f.n, f.n, 1)
    v = d[i, j]
    if o.method == "spearman":
        from scipy.stats import rankdata  # here: scipy.stats takes a second to import, and only RSA needs it

        v = torch.from_numpy(rankdata(v.cpu().numpy())).to(v)
    return _unit(v - v.mean())


# ---- choosing measures in a spec, and the family form ------------------------------------------

class MeasureChoice(BaseModel):
    """One measure of a spec's `measure.similarity`: a name, or a mapping {name: ..., option: value}."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    options: dict[str, Any] = {}

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v):
        return name_and_options(v, "name")

    @model_validator(mode="after")
    def _known(self):
        measure = get_measure(self.name) if self.name in _MEASURES else None
        if measure is None:
            raise ValueError(f"unknown similarity measure {self.name!r}; allowed: {', '.join(list_measures())}")
        try:
            measure.options(**self.options)
        except ValidationError as err:
            e = err.errors()[0]
            key = ".".join(str(x) for x in e["loc"])
            if e["type"] == "extra_forbidden":
                allowed = ", ".join(measure.options.model_fields) or "none"
                raise ValueError(f"{self.name} has no option {key!r}; allowed: {allowed}") from None
            raise ValueError(f"{self.name} option {key}: {e['msg']} (got {e.get('input')!r})") from None
        return self

    @property
    def measure(self) -> Measure:
        return get_measure(self.name)

    @property
    def resolved(self) -> _Options:
        return self.measure.options(**self.options)

    @property
    def options_json(self) -> str:
        """Every option, defaults filled: what the `similarity` table stores with each value."""
        return json.dumps(self.resolved.model_dump(mode="json"), sort_keys=True)

    @property
    def label(self) -> str:
        """`name`, or `name[k=v,...]` with the options that differ from the defaults."""
        changed = self.resolved.model_dump(mode="json", exclude_defaults=True)
        return self.name + (f"[{','.join(f'{k}={v}' for k, v in sorted(changed.items()))}]" if changed else "")

    @property
    def streaming(self) -> bool:
        """Computed by MinibatchCKA over every evaluation batch rather than on the buffered full batch."""
        return self.name == "linear_cka" and self.resolved.estimator == "minibatch"


class FullBatchSimilarity:
    """Buffers the first `examples` evaluation examples of every probe point (float32, on the CPU) and
    computes each full-batch measure's (P, P) heatmap from them. Memory: P x examples x features x 4
    bytes for the buffer, and per measure P states of up to examples^2 float64 values."""

    def __init__(self, choices: Sequence[MeasureChoice], examples: int | None = None):
        self.choices, self.examples = list(choices), examples
        self.buffers: list[list[torch.Tensor]] | None = None
        self.seen = 0

    def update(self, features: Sequence[torch.Tensor]) -> None:
        take = features[0].shape[0] if self.examples is None else min(features[0].shape[0], self.examples - self.seen)
        if take <= 0:
            return
        if self.buffers is None:
            self.buffers = [[] for _ in features]
        for buf, f in zip(self.buffers, features):
            buf.append(f[:take].detach().flatten(1).to("cpu", torch.float32))
        self.seen += take

    def compute(self) -> dict[str, np.ndarray]:
        """label -> (P, P) heatmap, for every choice that is not streaming."""
        if self.buffers is None:
            raise RuntimeError("FullBatchSimilarity.compute() called before any batch")
        choices = [c for c in self.choices if not c.streaming]
        opts = [c.resolved for c in choices]
        states: list[list] = [[] for _ in choices]
        for buf in self.buffers:  # one point at a time: the measures share its SVD and distances
            f = Features(torch.cat(buf))
            for s, c, o in zip(states, choices, opts):
                s.append(c.measure.prepare(f, o))
        return {c.label: c.measure.heatmap(s, o) for c, s, o in zip(choices, states, opts)}
