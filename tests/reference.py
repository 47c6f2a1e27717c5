"""Independent float64 NumPy references, written from the formulas (not from benchsuite's code)."""

import numpy as np


def hsic1(k: np.ndarray, l: np.ndarray) -> float:
    """Unbiased HSIC (Song et al. 2012, eq. 5) from raw Gram matrices, in its original form."""
    n = k.shape[0]
    kt, lt = k.copy(), l.copy()
    np.fill_diagonal(kt, 0)
    np.fill_diagonal(lt, 0)
    one = np.ones(n)
    term1 = np.trace(kt @ lt)
    term2 = (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
    term3 = 2 / (n - 2) * (one @ kt @ lt @ one)
    return (term1 + term2 - term3) / (n * (n - 3))


def minibatch_cka(batches_x: list[np.ndarray], batches_y: list[np.ndarray]) -> float:
    """Nguyen et al. 2021 eq. 2: HSIC_1 averaged over minibatches, then normalised."""
    xy = xx = yy = 0.0
    for x, y in zip(batches_x, batches_y):
        x = x.reshape(len(x), -1).astype(np.float64)
        y = y.reshape(len(y), -1).astype(np.float64)
        k, l = x @ x.T, y @ y.T
        xy += hsic1(k, l)
        xx += hsic1(k, k)
        yy += hsic1(l, l)
    return xy / np.sqrt(xx * yy)


def pc1_fraction(x: np.ndarray) -> float:
    """First principal component's share of the variance, from a full SVD."""
    x = x.reshape(len(x), -1).astype(np.float64)
    s = np.linalg.svd(x - x.mean(0), compute_uv=False)
    return float(s[0] ** 2 / (s ** 2).sum())


# ---- similarity measures, each from the paper that defines it ---------------------------------

def _centre(x: np.ndarray) -> np.ndarray:
    x = x.reshape(len(x), -1).astype(np.float64)
    return x - x.mean(0)


def _hsic_biased(k: np.ndarray, l: np.ndarray) -> float:
    """Gretton et al. 2005: tr(K H L H) / (n - 1)^2 with H the centring matrix."""
    n = k.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    return np.trace(k @ h @ l @ h) / (n - 1) ** 2


def cka(k: np.ndarray, l: np.ndarray, debiased: bool = False) -> float:
    """Kornblith et al. 2019 eq. 1 from two Gram matrices (biased HSIC, or Song et al.'s HSIC_1)."""
    f = hsic1 if debiased else _hsic_biased
    return f(k, l) / np.sqrt(f(k, k) * f(l, l))


def rbf_gram(x: np.ndarray, fraction: float) -> np.ndarray:
    """Gaussian kernel with sigma = fraction * sqrt(median squared distance), Kornblith's notebook convention."""
    x = x.reshape(len(x), -1).astype(np.float64)
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    return np.exp(-d / (2 * fraction ** 2 * np.median(d)))


def _inv_sqrt(c: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh(c)
    return vecs @ np.diag(vals ** -0.5) @ vecs.T


def canonical_correlations(x: np.ndarray, y: np.ndarray, centre: bool = True):
    """Hotelling 1936: singular values of Sxx^-1/2 Sxy Syy^-1/2, and X's canonical variates (n, m), unit norm."""
    x = _centre(x) if centre else x.astype(np.float64)
    y = _centre(y) if centre else y.astype(np.float64)
    sxx, syy, sxy = x.T @ x, y.T @ y, x.T @ y
    a, rho, _ = np.linalg.svd(_inv_sqrt(sxx) @ sxy @ _inv_sqrt(syy))
    m = min(x.shape[1], y.shape[1])
    h = x @ _inv_sqrt(sxx) @ a[:, :m]
    return np.clip(rho[:m], 0, 1), h / np.linalg.norm(h, axis=0)


def svd_reduce(x: np.ndarray, variance: float) -> np.ndarray:
    """Raghu et al. 2017: the centred features on their top singular directions explaining `variance`."""
    x = _centre(x)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    k = int(np.argmax(np.cumsum(s ** 2) / (s ** 2).sum() >= variance - 1e-12)) + 1
    return u[:, :k] * s[:k]


def pwcca(x: np.ndarray, y: np.ndarray) -> float:
    """Morcos et al. 2018 eq. 3: alpha_i = sum_j |<h_i, x_j>|, PWCCA = sum alpha_i rho_i / sum alpha_i."""
    rho, h = canonical_correlations(x, y)
    alpha = np.abs(h.T @ _centre(x)).sum(1)
    return float((alpha * rho).sum() / alpha.sum())


def procrustes_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Ding et al. 2021: min over orthogonal R of ||A R - B||_F^2, centred and unit-Frobenius A, B (scipy's solver)."""
    from scipy.linalg import orthogonal_procrustes

    a, b = _centre(x), _centre(y)
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    if a.shape[1] < b.shape[1]:
        a = np.hstack([a, np.zeros((len(a), b.shape[1] - a.shape[1]))])
    elif b.shape[1] < a.shape[1]:
        b = np.hstack([b, np.zeros((len(b), a.shape[1] - b.shape[1]))])
    r, _ = orthogonal_procrustes(a, b)
    return float(np.linalg.norm(a @ r - b) ** 2)


def mutual_knn(x: np.ndarray, y: np.ndarray, k: int) -> float:
    """Huh et al. 2024: mean over examples of the shared fraction of their k cosine nearest neighbours."""
    def neighbours(z):
        z = z.reshape(len(z), -1).astype(np.float64)
        out = []
        for i in range(len(z)):
            sims = [(-(z[i] @ z[j]) / (np.linalg.norm(z[i]) * np.linalg.norm(z[j])), j) for j in range(len(z)) if j != i]
            out.append({j for _, j in sorted(sims)[:k]})
        return out
    return float(np.mean([len(a & b) / k for a, b in zip(neighbours(x), neighbours(y))]))


def rsa(x: np.ndarray, y: np.ndarray, method: str = "pearson", rdm: str = "sqeuclidean") -> float:
    """Kriegeskorte et al. 2008: correlation of the condensed RDMs (scipy's pdist, pearsonr / spearmanr)."""
    from scipy.spatial.distance import pdist
    from scipy.stats import pearsonr, spearmanr

    dx = pdist(x.reshape(len(x), -1).astype(np.float64), rdm)
    dy = pdist(y.reshape(len(y), -1).astype(np.float64), rdm)
    return float((pearsonr if method == "pearson" else spearmanr)(dx, dy)[0])
