"""Error patterns: the statistics against hand-computed and SciPy references, then end to end
through `bench run` with predictions, probes, block deletion and a group comparison, and the views."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import stats

from benchsuite.analyses.errors import (
    agreement, benjamini_hochberg, class_accuracy, compare_groups, match_on_accuracy, name_matches, permutation_test,
    select_runs, welch,
)
from benchsuite.errors import SpecError
from benchsuite.spec import parse_spec
from conftest import make_spec, rows


def test_benjamini_hochberg_by_hand():
    # m = 4 finite p-values, sorted 0.01, 0.03, 0.04, 0.9 -> p m / rank = 0.04, 0.06, 0.0533, 0.9;
    # the running minimum from the top lowers 0.06 to 0.0533. The NaN is left out of m.
    q = benjamini_hochberg([0.04, 0.01, 0.03, 0.9, np.nan])
    np.testing.assert_allclose(q[:4], [0.16 / 3, 0.04, 0.16 / 3, 0.9])
    assert np.isnan(q[4])
    np.testing.assert_allclose(benjamini_hochberg([0.5, 0.9]), [0.9, 0.9])
    np.testing.assert_allclose(benjamini_hochberg([0.8, 0.9, 0.95]), [0.95, 0.95, 0.95])
    assert benjamini_hochberg([]).shape == (0,)
    p = np.random.default_rng(0).random(50) ** 3
    np.testing.assert_allclose(benjamini_hochberg(p), stats.false_discovery_control(p))


def test_welch_matches_scipy_and_handles_zero_variance():
    rng = np.random.default_rng(0)
    a, b = rng.random((3, 6)), rng.random((5, 6)) + 0.2
    t, p = welch(a, b)
    ref = stats.ttest_ind(a, b, axis=0, equal_var=False)
    np.testing.assert_allclose(t, ref.statistic)
    np.testing.assert_allclose(p, ref.pvalue)
    t, p = welch(np.array([[1.0, 1.0], [1.0, 1.0]]), np.array([[1.0, 0.9], [1.0, 0.9]]))
    assert (t[0], p[0]) == (0.0, 1.0) and np.isnan(t[1]) and np.isnan(p[1])


def test_permutation_test_exact_and_random():
    a, b = np.array([[0.9], [0.8], [0.85]]), np.array([[0.5], [0.6], [0.55]])
    diff, p = permutation_test(a, b)
    # 20 splits of 6 runs into 3 + 3; only the observed split and its mirror reach |diff| = 0.3
    assert diff[0] == pytest.approx(0.3) and p[0] == pytest.approx(2 / 20)
    _, p = permutation_test(a, b, permutations=10, seed=1)  # fewer than 20: random splits
    assert 1 / 11 <= p[0] <= 1


def synthetic(seeds, rate, worse=(), worse_rate=0.6, seed=0):
    """(seeds, 600) correctness of a group that is right with probability `rate`, lower on `worse` classes."""
    labels = np.arange(600) % 10
    p = np.where(np.isin(labels, worse), worse_rate, rate)
    return np.random.default_rng(seed).random((seeds, 600)) < p, labels


@pytest.mark.parametrize("test, seeds", [("welch", 4), ("permutation", 6)])
def test_group_worse_on_classes_3_and_7_is_flagged_there_only(test, seeds):
    correct_a, labels = synthetic(seeds, 0.9, worse=(3, 7), seed=1)
    correct_b, _ = synthetic(seeds, 0.9, seed=2)
    rows = compare_groups(correct_a, correct_b, labels, test=test)
    assert [r["class"] for r in rows] == list(range(10))
    assert [r["class"] for r in rows if r["significant"]] == [3, 7]
    for r in rows:
        assert r["mean_a"] < r["mean_b"] - 0.2 if r["class"] in (3, 7) else abs(r["mean_a"] - r["mean_b"]) < 0.1
        assert r["q_value"] >= r["p_value"]
    assert rows[3]["statistic"] < 0  # A minus B


def test_identical_groups_flag_nothing():
    correct, labels = synthetic(4, 0.9, worse=(3, 7))
    for test in ("welch", "permutation"):
        rows = compare_groups(correct, correct.copy(), labels, test=test)
        assert not any(r["significant"] for r in rows)
        assert all(r["p_value"] == 1.0 and r["q_value"] == 1.0 for r in rows)
    same_distribution, _ = synthetic(4, 0.9, worse=(3, 7), seed=5)
    assert not any(r["significant"] for r in compare_groups(correct, same_distribution, labels))


def test_class_accuracy_and_agreement_by_hand():
    labels = np.array([0, 0, 1, 1, 2])
    correct = np.array([[1, 0, 1, 1, 0], [1, 1, 0, 0, 1]], dtype=bool)
    np.testing.assert_allclose(class_accuracy(correct, labels, np.array([0, 1, 2])), [[0.5, 1, 0], [1, 0, 1]])
    got = agreement([0, 1, 1, 0, 0], [0, 0, 0, 2, 2], labels)
    # examples: both right, only b right, only a right, both wrong (with different classes), only b right
    assert got == dict(both_right=0.2, both_wrong=0.2, a_only_right=0.2, b_only_right=0.4, agreement=0.2)


def test_run_name_globs_take_brackets_literally():
    name = "cifar_resnet[depth=56,width=1]"
    assert name_matches(name, "cifar_resnet[depth=56,*")
    assert name_matches(name, name) and name_matches(name, "*width=1]") and name_matches(name, "cifar_resnet[depth=5?,*")
    assert not name_matches("cifar_resnet[depth=8,width=1]", "cifar_resnet[depth=56,*")
    assert not name_matches(name, "cifar_resnet[depth=56")


class FakeConfig(dict):
    """The two parts of a RunConfig the selectors read: `.params`, and its JSON (architectures differ but in seed)."""

    @property
    def params(self):
        return self["params"]


def fake_runs(*names_and_accuracies):
    return [SimpleNamespace(run_id=f"{name}/{i}", name=name, config=FakeConfig(family="r", params=params, seed=i),
                            accuracy=acc)
            for name, params, accs in names_and_accuracies for i, acc in enumerate(accs)]


def test_group_selection_and_matching_on_accuracy():
    runs = fake_runs(("r[depth=8,width=4]", {"depth": 8, "width": 4}, [0.90, 0.92]),
                     ("r[depth=20,width=1]", {"depth": 20, "width": 1}, [0.80, 0.82]),
                     ("r[depth=56,width=1]", {"depth": 56, "width": 1}, [0.89, 0.91]))
    assert [j.run_id for j in select_runs(runs, {"depth": [20, 56], "width": 1})] == [j.run_id for j in runs[2:]]
    assert select_runs(runs, "r[depth=8,*") == runs[:2] and select_runs(runs, None) == runs
    assert select_runs(runs, {"heads": 4}) == []
    accuracy = {j.run_id: j.accuracy for j in runs}
    wide, deep = match_on_accuracy(select_runs(runs, "*width=4]"), select_runs(runs, "*width=1]"), accuracy)
    assert {j.name for j in wide} == {"r[depth=8,width=4]"} and {j.name for j in deep} == {"r[depth=56,width=1]"}
    a, b = match_on_accuracy(runs, runs, accuracy)  # groups overlap: still two different architectures
    assert {a[0].name, b[0].name} == {"r[depth=8,width=4]", "r[depth=56,width=1]"}


def test_errors_options_need_groups_unless_matched_on_accuracy():
    base = "name: x\nfamily: {name: cifar_resnet}\nanalyses:\n  - "
    parse_spec(base + "{kind: errors, group_a: 'a*', group_b: {depth: [8, 14]}, test: permutation}")
    parse_spec(base + "{kind: errors, match: accuracy}")
    with pytest.raises(SpecError, match="give group_a and group_b"):
        parse_spec(base + "{kind: errors, group_a: 'a*'}")
    with pytest.raises(SpecError, match="analyses\\[0\\].pooling"):
        parse_spec(base + "{kind: probes, pooling: max}")


SPEC = make_spec("errors", train_size=200, eval_size=100, depths="[8, 14]", seeds="[0, 1]", batch_size=50,
                 analyses='[predictions, probes, blocks, ablation, '
                          '{kind: errors, group_a: "cifar_resnet[depth=8,*", group_b: {depth: 14}}]')


def test_bench_run_stores_every_analysis_and_the_views_answer(workdir, cli):
    (workdir / "e.yaml").write_text(SPEC)
    result = cli("run", "e.yaml")
    assert result.exit_code == 0, result.output
    db = workdir / "bench.duckdb"
    runs = dict(rows(db, "SELECT run_id, name FROM runs"))
    assert len(runs) == 4
    assert rows(db, "SELECT count(*), count(DISTINCT run_id) FROM predictions") == [(400, 4)]
    assert rows(db, "SELECT count(*) FROM probes") == [(2 * 4 + 2 * 7,)]  # probe points: depth 8 has 4, depth 14 has 7
    targets = {t for t, in rows(db, "SELECT DISTINCT target FROM ablations")}
    assert {"stage1.block0", "stage3.block1"} <= targets
    (status, run_ids), = rows(db, "SELECT status, run_ids FROM analyses WHERE kind = 'errors'")
    assert status == "complete" and sorted(json.loads(run_ids)) == sorted(runs)
    classes = rows(db, "SELECT class, mean_a, mean_b, p_value, q_value FROM error_classes ORDER BY class")
    assert [c[0] for c in classes] == list(range(10))
    # error_classes agrees with the per-class accuracy the view computes from the predictions
    view = dict(rows(db, "SELECT class, avg(accuracy) FROM class_accuracy WHERE depth = 8 GROUP BY class"))
    for c, mean_a, *_ in classes:
        assert mean_a == pytest.approx(view[c])
    pairs = rows(db, "SELECT ra.name, rb.name, count(*), min(e.both_right + e.both_wrong + e.a_only_right + e.b_only_right) "
                     "FROM error_agreement e JOIN runs ra ON ra.run_id = e.run_a JOIN runs rb ON rb.run_id = e.run_b "
                     "GROUP BY ALL ORDER BY ALL")
    assert [p[:3] for p in pairs] == [("cifar_resnet[depth=14,width=1]", "cifar_resnet[depth=14,width=1]", 1),
                                      ("cifar_resnet[depth=8,width=1]", "cifar_resnet[depth=14,width=1]", 4),
                                      ("cifar_resnet[depth=8,width=1]", "cifar_resnet[depth=8,width=1]", 1)]
    assert all(p[3] == pytest.approx(1.0) for p in pairs)

    def query(sql):
        out = cli("query", sql, "-f", "json")
        assert out.exit_code == 0, out.output
        return json.loads(out.stdout)

    final = query("SELECT name, seed, eval_acc FROM run_accuracy ORDER BY name, seed")
    stored = dict(rows(db, "SELECT run_id, value FROM metrics WHERE name = 'eval_acc' AND epoch = 2"))
    assert sorted(r["eval_acc"] for r in final) == sorted(stored.values())
    per_class = query("SELECT depth, class, avg(accuracy) AS acc, sum(examples) AS n FROM class_accuracy "
                      "GROUP BY depth, class ORDER BY depth, class")
    assert len(per_class) == 20 and all(r["n"] == 20 for r in per_class)  # 10 examples per class, 2 seeds
    probe = query("SELECT depth, layer, layer_name, avg(accuracy) AS acc FROM probe_accuracy "
                  "GROUP BY ALL ORDER BY depth, layer")
    assert [r["layer_name"] for r in probe[:4]] == ["stem", "stage1.block0", "stage2.block0", "stage3.block0"]
    sizes = query("SELECT depth, width, count(*) AS runs, avg(largest_fraction) AS largest, avg(block_fraction) AS total "
                  "FROM block_sizes GROUP BY depth, width ORDER BY depth")
    assert [(r["depth"], r["width"], r["runs"]) for r in sizes] == [(8, 1.0, 2), (14, 1.0, 2)]
    assert all(0 <= r["largest"] <= r["total"] <= 1 for r in sizes)

    # Without stored predictions the comparison predicts with the checkpoints: the same result.
    (workdir / "f.yaml").write_text(SPEC.replace("[predictions, probes, blocks, ablation, ", "[").replace(
        "}}]", "}}, {kind: errors, match: accuracy, test: permutation}]"))
    again = cli("run", "f.yaml", "--db", "fresh.duckdb")
    assert again.exit_code == 0, again.output
    fresh = workdir / "fresh.duckdb"
    assert rows(fresh, "SELECT count(*) FROM predictions") == [(0,)]
    sql = ("SELECT class, mean_a, mean_b, statistic, p_value, q_value, significant FROM error_classes "
           "JOIN analyses USING (analysis_id) WHERE options LIKE '%{}%' ORDER BY class")
    assert rows(fresh, sql.format("group_a")) == rows(db, sql.format("group_a"))
    # Two architectures: matching on accuracy compares them, with 6 exact splits of 2 + 2 seeds.
    matched = rows(fresh, sql.format("permutation"))
    assert sorted((m[1], m[2]) for m in matched) in (sorted((c[1], c[2]) for c in classes),
                                                     sorted((c[2], c[1]) for c in classes))
    assert all(m[4] >= 2 / 6 for m in matched)
