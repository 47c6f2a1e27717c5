"""Error patterns (family kind `errors`): do two groups of runs, e.g. a wide and a deep architecture,
make the same mistakes?

For each class, every run's accuracy on that class's evaluation examples is one sample; the groups'
samples (their seeds) are compared by Welch's t-test, or a permutation test of the difference in mean
accuracy, and the per-class p-values are corrected for multiple comparisons by Benjamini-Hochberg at
false discovery rate `alpha`. Per pair of runs, per-example agreement: how often both are right, both
wrong, only one right, and how often they predict the same class.

The statistics are pure functions of (runs, examples) arrays. The analysis reads the runs' stored
predictions (kind `predictions`) and predicts with the checkpoint for any run without them.
"""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

import numpy as np
import sqlalchemy as sa
from scipy import stats

from benchsuite.analyses.options import ErrorOptions, RunSelector
from benchsuite.analyses.predictions import predict
from benchsuite.errors import BenchError
from benchsuite.runner.family import FamilyContext, family_analysis
from benchsuite.runner.jobs import Job
from benchsuite.spec.load import config_key, name_matches
from benchsuite.store import tables as t


def benjamini_hochberg(p_values) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values); NaN p-values stay NaN and do not count in m."""
    p = np.asarray(p_values, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    finite = np.isfinite(p)
    m = int(finite.sum())
    if m:
        order = np.argsort(p[finite])
        scaled = p[finite][order] * m / np.arange(1, m + 1)
        # q_(i) = min over j >= i of p_(j) m / j: a running minimum from the largest p down
        adjusted = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
        out = np.empty(m)
        out[order] = adjusted
        q[finite] = out
    return q


def class_accuracy(correct: np.ndarray, labels: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """(runs, examples) booleans -> (runs, classes) accuracy on each class's examples."""
    onehot = labels[None, :] == classes[:, None]  # (classes, examples)
    return (correct.astype(np.float64) @ onehot.T) / onehot.sum(1)


def welch(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Welch's t statistic (A minus B) and two-sided p-value per column of (runs, classes) samples.

    Where both groups have zero variance the test is undefined: t = 0, p = 1 when the means are
    equal, NaN otherwise (use the permutation test there).
    """
    na, nb = len(a), len(b)
    diff = a.mean(0) - b.mean(0)
    va, vb = a.var(0, ddof=1) / na, b.var(0, ddof=1) / nb
    se2 = va + vb
    with np.errstate(divide="ignore", invalid="ignore"):
        stat = diff / np.sqrt(se2)
        df = se2 ** 2 / (va ** 2 / (na - 1) + vb ** 2 / (nb - 1))
        p = 2 * stats.t.sf(np.abs(stat), df)
    degenerate = se2 == 0
    stat[degenerate] = np.where(diff[degenerate] == 0, 0.0, np.nan)
    p[degenerate] = np.where(diff[degenerate] == 0, 1.0, np.nan)
    return stat, p


def permutation_test(a: np.ndarray, b: np.ndarray, permutations: int = 10_000,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Difference in means (A minus B) and its two-sided permutation p-value per column.

    Every split of the pooled runs into groups of the original sizes when there are at most
    `permutations` of them (exact; the observed split is one, so p >= 1 / splits), else
    `permutations` random splits with p = (hits + 1) / (permutations + 1).
    """
    pooled = np.concatenate([a, b])
    n, na = len(pooled), len(a)
    observed = a.mean(0) - b.mean(0)
    exact = math.comb(n, na) <= permutations
    if exact:
        members = np.zeros((math.comb(n, na), n))
        for row, idx in enumerate(itertools.combinations(range(n), na)):
            members[row, list(idx)] = 1.0
    else:
        rng = np.random.default_rng(seed)
        members = (rng.random((permutations, n)).argsort(1) < na).astype(np.float64)
    diffs = members @ pooled / na - (1 - members) @ pooled / (n - na)
    hits = (np.abs(diffs) >= np.abs(observed) - 1e-12).sum(0)
    p = hits / len(members) if exact else (hits + 1) / (permutations + 1)
    return observed, p


def compare_groups(correct_a, correct_b, labels, *, test: str = "welch", alpha: float = 0.05,
                   permutations: int = 10_000, seed: int = 0) -> list[dict]:
    """Per-class comparison of two groups of runs on the same evaluation examples.

    correct_a (runs_a, examples) and correct_b (runs_b, examples): whether each run got each example
    right; labels (examples,). Returns one error_classes row per class present in `labels`: mean
    accuracy of each group over its runs, the test statistic, p-value, BH q-value and whether q <= alpha.
    """
    correct_a, correct_b, labels = np.asarray(correct_a, bool), np.asarray(correct_b, bool), np.asarray(labels)
    if correct_a.shape[1:] != labels.shape or correct_b.shape[1:] != labels.shape:
        raise ValueError(f"correct_a {correct_a.shape} and correct_b {correct_b.shape} must be (runs, {len(labels)})")
    if min(len(correct_a), len(correct_b)) < 2:
        raise BenchError(f"each group needs at least 2 runs (seeds), got {len(correct_a)} and {len(correct_b)}")
    classes = np.unique(labels)
    acc_a, acc_b = class_accuracy(correct_a, labels, classes), class_accuracy(correct_b, labels, classes)
    if test == "welch":
        stat, p = welch(acc_a, acc_b)
    else:
        stat, p = permutation_test(acc_a, acc_b, permutations, seed)
    q = benjamini_hochberg(p)
    return [{"class": int(c), "mean_a": float(ma), "mean_b": float(mb), "statistic": float(s), "p_value": float(pv),
             "q_value": float(qv), "significant": bool(qv <= alpha)}
            for c, ma, mb, s, pv, qv in zip(classes, acc_a.mean(0), acc_b.mean(0), stat, p, q)]


def agreement(pred_a, pred_b, labels) -> dict[str, float]:
    """Fractions of examples both runs get right, both wrong, only one right, and predicted alike."""
    pred_a, pred_b, labels = np.asarray(pred_a), np.asarray(pred_b), np.asarray(labels)
    ra, rb = pred_a == labels, pred_b == labels
    return dict(both_right=float((ra & rb).mean()), both_wrong=float((~ra & ~rb).mean()),
                a_only_right=float((ra & ~rb).mean()), b_only_right=float((~ra & rb).mean()),
                agreement=float((pred_a == pred_b).mean()))


def select_runs(runs: list[Job], selector: RunSelector | None) -> list[Job]:
    """The runs a group selector names: a run-name glob, a parameter dict (value or list of values), or None (all)."""
    if selector is None:
        return list(runs)
    if isinstance(selector, str):
        return [j for j in runs if name_matches(j.name, selector)]

    def allowed(key: str, value: Any) -> bool:
        want = selector[key]
        return value in want if isinstance(want, list) else value == want

    return [j for j in runs if all(k in j.config.params and allowed(k, j.config.params[k]) for k in selector)]


def stored_predictions(engine: sa.Engine, run_ids: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(labels, predictions) per run from the newest complete `predictions` analysis of each run."""
    p, a = t.predictions, t.analyses
    query = (sa.select(p.c.run_id, p.c.analysis_id, p.c.example, p.c.label, p.c.prediction)
             .join(a, a.c.analysis_id == p.c.analysis_id)
             .where(p.c.run_id.in_(run_ids), a.c.status == "complete")
             .order_by(p.c.run_id, a.c.created_at.desc(), p.c.analysis_id, p.c.example))
    chosen: dict[str, str] = {}
    rows: dict[str, list[tuple[int, int]]] = {}
    with engine.connect() as conn:
        for run_id, aid, _, label, pred in conn.execute(query):
            if chosen.setdefault(run_id, aid) == aid:
                rows.setdefault(run_id, []).append((label, pred))
    return {rid: tuple(np.array(col) for col in zip(*r)) for rid, r in rows.items()}


def _predictions(ctx: FamilyContext, runs: list[Job]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out = stored_predictions(ctx.engine, [j.run_id for j in runs])
    for job in runs:
        if job.run_id not in out:
            labels, preds, _ = predict(ctx.load_model(job), ctx.data(job).eval_loader(ctx.device))
            out[job.run_id] = (labels, preds)
    return out


def _by_architecture(runs: list[Job]) -> dict[str, list[Job]]:
    """The seeds of each trained setting: runs whose configurations differ only in the seed."""
    out: dict[str, list[Job]] = {}
    for j in runs:
        out.setdefault(config_key(j.config), []).append(j)
    return out


def match_on_accuracy(group_a: list[Job], group_b: list[Job], accuracy: dict[str, float]) -> tuple[list[Job], list[Job]]:
    """The architecture of A and the (different) architecture of B whose mean accuracies are closest."""
    arch_a, arch_b = _by_architecture(group_a), _by_architecture(group_b)

    def mean_acc(jobs: list[Job]) -> float:
        return float(np.mean([accuracy[j.run_id] for j in jobs]))

    pairs = [(abs(mean_acc(arch_a[na]) - mean_acc(arch_b[nb])), na, nb)
             for na in sorted(arch_a) for nb in sorted(arch_b) if na != nb]
    if not pairs:
        raise BenchError("match: accuracy needs two different architectures among the selected runs")
    _, na, nb = min(pairs)
    return arch_a[na], arch_b[nb]


@family_analysis("errors")
def _errors(ctx: FamilyContext, options: dict) -> dict[str, list[dict]]:
    opts = ErrorOptions.model_validate(options)
    group_a, group_b = select_runs(ctx.runs, opts.group_a), select_runs(ctx.runs, opts.group_b)
    for name, group, selector in (("group_a", group_a, opts.group_a), ("group_b", group_b, opts.group_b)):
        if not group:
            raise BenchError(f"{name} {json.dumps(selector)} matches no complete run of the spec")
    both = {j.run_id for j in group_a} & {j.run_id for j in group_b}
    if both and opts.match == "none":  # matching picks two different architectures, so disjoint groups
        raise BenchError(f"{len(both)} runs are in both groups; make group_a and group_b disjoint")
    preds = _predictions(ctx, list({j.run_id: j for j in group_a + group_b}.values()))
    labels = next(iter(preds.values()))[0]
    if any(not np.array_equal(lab, labels) for lab, _ in preds.values()):
        raise BenchError("the compared runs were evaluated on different evaluation sets")
    if opts.match == "accuracy":
        accuracy = {rid: float((p == labels).mean()) for rid, (_, p) in preds.items()}
        group_a, group_b = match_on_accuracy(group_a, group_b, accuracy)

    def correct(group: list[Job]) -> np.ndarray:
        return np.stack([preds[j.run_id][1] == labels for j in group])

    classes = compare_groups(correct(group_a), correct(group_b), labels, test=opts.test, alpha=opts.alpha,
                             permutations=opts.permutations, seed=opts.seed)
    # Pairs across the groups, and within each group as the seed-to-seed baseline.
    pairs = [*itertools.product(group_a, group_b), *itertools.combinations(group_a, 2), *itertools.combinations(group_b, 2)]
    agree = [dict(run_a=a.run_id, run_b=b.run_id, **agreement(preds[a.run_id][1], preds[b.run_id][1], labels))
             for a, b in pairs]
    return {"error_classes": classes, "error_agreement": agree}
