"""Block-structure detector on synthetic heatmaps like those its defaults were calibrated on."""

import itertools

import numpy as np
import pytest

from benchsuite.measure.blocks import Block, BlockParams, block_score, detect_blocks


def heatmap(n_layers, blocks=(), *, tau=5.0, level=0.94, noise=0.02, seed=0):
    """Smooth background exp(-|i-j|/tau) with planted uniform blocks, and PC1 fractions."""
    rng = np.random.default_rng(seed)
    i = np.arange(n_layers)
    cka = np.exp(-np.abs(i[:, None] - i[None, :]) / tau)
    pc1 = rng.uniform(0.1, 0.3, n_layers)
    for start, end in blocks:
        cka[start : end + 1, start : end + 1] = level
        pc1[start : end + 1] = rng.uniform(0.6, 0.9, end - start + 1)
    z = np.triu(rng.normal(0.0, noise, (n_layers, n_layers)), 1)
    cka = np.clip(cka + z + z.T, 0.0, 1.0)
    np.fill_diagonal(cka, 1.0)
    return cka, pc1


def spans(blocks):
    return [(b.start, b.end) for b in blocks]


def assert_found(found, planted):
    assert len(found) == len(planted), f"planted {planted}, found {spans(found)}"
    for b, (start, end) in zip(found, planted):
        assert abs(b.start - start) <= 1 and abs(b.end - end) <= 1, f"planted {planted}, found {spans(found)}"


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(
    "n_layers, planted",
    [(28, (0, 9)), (28, (10, 19)), (28, (17, 27)), (55, (20, 44)), (110, (0, 59)), (10, (3, 6))],
    ids=["start", "middle", "end", "resnet110", "long", "short-net"],
)
def test_one_planted_block_is_found(n_layers, planted, seed):
    cka, pc1 = heatmap(n_layers, [planted], tau=4.0 + 6 * seed, noise=0.03, seed=seed)
    found = detect_blocks(cka, pc1)
    assert_found(found, [planted])
    assert found[0].survives_pc1_removal is None


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(
    "n_layers, planted",
    [(28, [(0, 7), (12, 20)]), (55, [(5, 20), (24, 54)]), (55, [(0, 15), (17, 30)])],
    ids=["start-and-middle", "middle-and-end", "one-layer-apart"],
)
def test_two_planted_blocks_are_found(n_layers, planted, seed):
    cka, pc1 = heatmap(n_layers, planted, tau=3.0, noise=0.03, seed=seed)
    assert_found(detect_blocks(cka, pc1), planted)


@pytest.mark.parametrize("tau", [1.0, 3.0, 10.0, 30.0])
@pytest.mark.parametrize("n_layers", [10, 28, 110])
def test_smooth_heatmap_has_no_block(n_layers, tau):
    cka, pc1 = heatmap(n_layers, tau=tau, noise=0.02, seed=n_layers)
    assert detect_blocks(cka, pc1) == []
    assert block_score(cka, pc1) == 0.0


def test_high_cka_without_dominant_pc1_is_not_a_block():
    cka, pc1 = heatmap(28, [(5, 20)], noise=0.0)
    pc1[:] = 0.3
    assert detect_blocks(cka, pc1) == []


def test_block_fields_on_a_noiseless_heatmap():
    cka, pc1 = heatmap(20, [(5, 14)], tau=1.0, level=0.95, noise=0.0)
    pc1[5:15] = 0.8
    (b,) = detect_blocks(cka, pc1)
    assert (b.start, b.end, b.size) == (5, 14, 10)
    assert b.size_fraction == pytest.approx(0.5)
    assert b.mean_cka == pytest.approx(0.95)
    assert b.mean_pc1 == pytest.approx(0.8)
    assert b.score == pytest.approx(0.5 * (0.95 - 0.75) / 0.25)
    assert block_score(cka, pc1) == pytest.approx(b.score)


def test_score_grows_with_block_size():
    scores = []
    for size in (4, 8, 14, 20, 28):
        cka, pc1 = heatmap(28, [(0, size - 1)], noise=0.01, seed=size)
        scores.append(block_score(cka, pc1))
    assert scores[0] > 0
    assert all(a < b for a, b in itertools.pairwise(scores)), scores


def test_score_grows_with_block_strength_and_fades_at_the_threshold():
    scores = []
    for level in (0.76, 0.85, 0.92, 0.99):
        cka, pc1 = heatmap(28, [(5, 20)], level=level, noise=0.0)
        scores.append(block_score(cka, pc1))
    assert scores[0] < 0.05
    assert all(a < b for a, b in itertools.pairwise(scores)), scores


def test_two_blocks_score_more_than_either():
    cka, pc1 = heatmap(55, [(5, 20), (24, 54)], tau=3.0, noise=0.01)
    blocks = detect_blocks(cka, pc1)
    assert block_score(cka, pc1) == pytest.approx(sum(b.score for b in blocks))
    assert block_score(cka, pc1) > max(b.score for b in blocks)


def test_survival_after_pc1_removal():
    cka, pc1 = heatmap(28, [(5, 20)], noise=0.01)
    dissolved, _ = heatmap(28, [], tau=2.0, noise=0.01, seed=1)
    (b,) = detect_blocks(cka, pc1, cka_after_pc1_removal=dissolved)
    assert b.survives_pc1_removal is False
    (b,) = detect_blocks(cka, pc1, cka_after_pc1_removal=cka)
    assert b.survives_pc1_removal is True


def test_an_isolated_low_cell_does_not_split_a_long_block():
    cka, pc1 = heatmap(40, [(5, 34)], tau=2.0, noise=0.0)
    cka[15, 25] = cka[25, 15] = 0.3
    assert spans(detect_blocks(cka, pc1)) == [(5, 34)]
    # With no tolerance, the low cell's two layers cannot share a block.
    strict = spans(detect_blocks(cka, pc1, params=BlockParams(max_dip_fraction=0.0)))
    assert all(not (s <= 15 and 25 <= e) for s, e in strict) and strict


def test_a_dead_layer_is_not_a_member_and_does_not_poison_the_result():
    cka, pc1 = heatmap(28, [(5, 20)], noise=0.0)
    cka[20, :] = cka[:, 20] = np.nan
    pc1[20] = np.nan
    (b,) = detect_blocks(cka, pc1)
    assert (b.start, b.end) == (5, 19)
    assert np.isfinite([b.mean_cka, b.mean_pc1, b.score]).all()


def test_params_override_defaults():
    cka, pc1 = heatmap(28, [(5, 9)], noise=0.0)
    assert spans(detect_blocks(cka, pc1)) == [(5, 9)]
    assert detect_blocks(cka, pc1, params=BlockParams(min_layers=6)) == []
    assert detect_blocks(cka, pc1, params=BlockParams(min_fraction=0.25)) == []
    assert detect_blocks(cka, pc1, params=BlockParams(min_cka=0.95)) == []
    assert detect_blocks(cka, pc1, params=BlockParams(min_pc1=0.95)) == []


def test_inputs_are_not_modified():
    cka, pc1 = heatmap(28, [(5, 20)])
    cka[3, 4] = cka[4, 3] = np.nan
    before = cka.copy(), pc1.copy()
    detect_blocks(cka, pc1, cka_after_pc1_removal=cka)
    np.testing.assert_array_equal(cka, before[0])
    np.testing.assert_array_equal(pc1, before[1])


def test_calibration_defaults_on_random_draws():
    """The calibration of the module docstring, at a small scale: noise sd 0.03, random tau."""
    rng = np.random.default_rng(123)
    for draw in range(40):
        n_layers = int(rng.choice([10, 28, 55, 110]))
        tau = rng.uniform(1, 30)
        cka, pc1 = heatmap(n_layers, tau=tau, noise=0.03, seed=draw)
        assert detect_blocks(cka, pc1) == [], (n_layers, tau)
        size = max(3, int(rng.uniform(0.15, 0.6) * n_layers))
        start = int(rng.integers(0, n_layers - size + 1))
        planted = [(start, start + size - 1)]
        cka, pc1 = heatmap(n_layers, planted, tau=tau, level=rng.uniform(0.88, 0.98), noise=0.03, seed=draw)
        assert_found(detect_blocks(cka, pc1), planted)


def test_blocks_hold_plain_python_values_for_the_store():
    cka, pc1 = heatmap(28, [(5, 20)])
    (b,) = detect_blocks(cka, pc1, cka_after_pc1_removal=cka)
    assert isinstance(b, Block)
    values = (b.start, b.end, b.size_fraction, b.mean_cka, b.mean_pc1, b.survives_pc1_removal, b.score)
    assert [type(v) for v in values] == [int, int, float, float, float, bool, float]


@pytest.mark.parametrize(
    "cka, pc1, after, message",
    [
        (np.eye(4)[:3], np.zeros(3), None, "square"),
        (np.ones(4), np.zeros(4), None, "square"),
        (np.eye(4), np.zeros(3), None, r"one value per probe point \(4,\)"),
        (np.eye(4), np.zeros((4, 1)), None, "one value per probe point"),
        (np.eye(4), np.zeros(4), np.eye(3), "shape of cka"),
        (np.triu(np.ones((4, 4))), np.zeros(4), None, "symmetric"),
    ],
    ids=["non-square", "1-d", "pc1-length", "pc1-2d", "after-shape", "asymmetric"],
)
def test_invalid_input_raises_a_clear_value_error(cka, pc1, after, message):
    with pytest.raises(ValueError, match=message):
        detect_blocks(cka, pc1, cka_after_pc1_removal=after)
    with pytest.raises(ValueError, match=message):
        block_score(cka, pc1, cka_after_pc1_removal=after)


@pytest.mark.parametrize("bad", [{"min_cka": 1.0}, {"min_layers": 1}, {"max_dip_fraction": 0.5}, {"min_ckaa": 0.8}])
def test_invalid_params_are_rejected(bad):
    with pytest.raises(ValueError):
        BlockParams(**bad)
