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
