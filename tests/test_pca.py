import pytest
import torch

from benchsuite.measure import StreamingPCA
from reference import pc1_fraction


def run_pca(features: list[torch.Tensor], batch: int, **kw) -> StreamingPCA:
    pca = StreamingPCA(**kw)
    while not pca.done:
        for i in range(0, len(features[0]), batch):
            pca.update([f[i:i + batch] for f in features])
        pca.end_pass()
    return pca


@pytest.mark.parametrize("dominance", [0.0, 3.0, 30.0])
def test_pc1_fraction_matches_full_svd(dominance):
    g = torch.Generator().manual_seed(0)
    n = 700
    narrow = torch.randn(n, 40, generator=g) * torch.linspace(2, 0.1, 40) + 4
    wide = torch.randn(n, 3000, generator=g) * torch.linspace(2, 0.1, 3000) + 4
    shared = torch.randn(n, 1, generator=g) * dominance
    narrow[:, :5] += shared
    wide[:, :50] += shared
    pca = run_pca([narrow, wide], batch=128, exact_dim=100)  # the wide layer takes the iterative path
    for got, x in zip(pca.pc1_fraction, (narrow, wide)):
        assert abs(got - pc1_fraction(x.numpy())) < 1e-3
