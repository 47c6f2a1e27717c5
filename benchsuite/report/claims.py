"""The claims of Nguyen, Raghu & Kornblith (2021), each evaluated by queries over stored results.

Every claim yields a statistic, its uncertainty over seeds, a verdict ("supported", "not
supported", "not enough runs") and the table of evidence it was computed from. The thresholds:

- Trends (C1 depth, C2 width, C3 data size) compare the mean block score (table block_scores) at
  the two extremes of a sweep: runs that differ only in that parameter. statistic = mean score at
  the end where the paper expects more block (deepest, widest, least data) minus the other end;
  uncertainty = its standard error over seeds. A sweep supports the claim when the statistic > 0,
  exceeds TREND_SE x its standard error, and Spearman's rho between the parameter and the score
  over all runs of the sweep is >= MIN_RHO in the expected direction; it contradicts it when the
  statistic is below -TREND_SE x its standard error. Every level needs MIN_SEEDS seeds. The claim
  is supported when some sweep supports it and none contradicts it (a sweep without any block,
  e.g. on data too large for the models to form one, neither supports nor contradicts).
- C4: the mean first-PC fraction inside detected blocks must reach DOMINANT_PC1, and at least
  DISSOLVE_FRACTION of the blocks must dissolve when each layer's PC1 is removed (their mean CKA
  after removal falls under the detector's min_cka, i.e. survives_pc1_removal is false).
- C5: cross-seed CKA of the same layer (cross_cka across seeds) outside the blocks minus inside
  them; supported when the mean difference over seed pairs >= MIN_GAP and > TREND_SE standard
  errors, and the mean outside is >= HIGH_CKA.
- C6: an `errors` analysis whose groups' accuracies differ by at most MATCHED_ACCURACY must flag
  at least one class after Benjamini-Hochberg correction.
- C7: linear-probe accuracy gained per layer across the block must be smaller than outside it, and
  the total gain across the block at most FLAT_GAIN.
- C8: deleting a single residual block inside the block structure must cost less accuracy than
  deleting one outside it: mean drop outside minus inside > 0 and > TREND_SE standard errors.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import sqlalchemy as sa
from scipy import stats
from sqlalchemy.engine import Engine

MIN_SEEDS = 2
MIN_RHO = 0.5
TREND_SE = 2.0
DOMINANT_PC1 = 0.5
DISSOLVE_FRACTION = 0.75
MIN_GAP = 0.05
HIGH_CKA = 0.6
MATCHED_ACCURACY = 0.02
FLAT_GAIN = 0.02

SUPPORTED, NOT_SUPPORTED, NOT_ENOUGH = "supported", "not supported", "not enough runs"


@dataclass
class ClaimResult:
    claim: str
    title: str
    statistic: float | None
    uncertainty: float | None
    verdict: str
    meaning: str  # what the statistic measures
    columns: list[str] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)
    note: str = ""
    figure: dict = field(default_factory=dict)  # data for the claim's figure


@dataclass
class Run:
    run_id: str
    name: str
    family: str
    params: dict
    dataset: str
    train_examples: int
    seed: int
    spec: str
    eval_acc: float | None
    config: dict = field(default_factory=dict)  # the run's full configuration (RunConfig as JSON)
    score: float | None = None
    blocks: list[tuple[int, int]] = field(default_factory=list)
    blocks_analysis: str | None = None


class Results:
    """The stored results a claims report reads, loaded once."""

    def __init__(self, engine: Engine, specs: list[str] | None = None):
        self.engine = engine
        # One connection for every query of the report: a DuckDB connection costs ~0.1 s to open.
        self.conn = engine.connect()
        where = "r.status = 'complete'"
        if specs:
            where += " AND s.name IN (" + ", ".join(f"'{s}'" for s in specs if "'" not in s) + ")"
        rows = self.query(
            "SELECT r.run_id, r.name, r.family, r.params, r.dataset, r.train_examples, r.seed, s.name, a.eval_acc, r.config "
            "FROM runs r LEFT JOIN specs s ON s.spec_hash = r.spec_hash "
            f"LEFT JOIN run_accuracy a ON a.run_id = r.run_id WHERE {where} ORDER BY r.name, r.seed, r.run_id")
        self.runs = {r[0]: Run(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5], r[6], r[7] or "", r[8], json.loads(r[9]))
                     for r in rows}
        # The latest block analysis of each run.
        for aid, run_id, score in self.query(
                "SELECT b.analysis_id, b.run_id, b.score FROM block_scores b JOIN analyses a USING (analysis_id) "
                "ORDER BY a.created_at, b.analysis_id"):
            if run_id in self.runs:
                self.runs[run_id].score, self.runs[run_id].blocks_analysis = score, aid
        for aid, run_id, start, end in self.query(
                "SELECT analysis_id, run_id, start_layer, end_layer FROM blocks ORDER BY run_id, start_layer"):
            run = self.runs.get(run_id)
            if run is not None and run.blocks_analysis == aid:
                run.blocks.append((start, end))

    def query(self, sql: str, **params) -> list[tuple]:
        return [tuple(r) for r in self.conn.execute(sa.text(sql), params)]

    def close(self) -> None:
        self.conn.close()

    def with_blocks(self) -> list[Run]:
        return [r for r in self.runs.values() if r.blocks]

    def heatmap(self, run_id: str, pc_removed: bool) -> np.ndarray | None:
        cells = self.query("SELECT layer_a, layer_b, value FROM cka WHERE run_a = :r AND run_b = :r "
                           "AND epoch_a = epoch_b AND pc_removed = :p", r=run_id, p=pc_removed)
        if not cells:
            return None
        n = max(max(a, b) for a, b, _ in cells) + 1
        m = np.full((n, n), np.nan)
        for a, b, v in cells:
            m[a, b] = v
        return m


def _mean_se(values) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else 0.0


def _inside(layer: int, blocks: list[tuple[int, int]]) -> bool:
    return any(s <= layer <= e for s, e in blocks)


# --- C1-C3: block structure grows with depth, with width, and with less data ---------------------

def _level(run: Run, param: str):
    return run.train_examples if param == "train_examples" else run.params.get(param)


def sweeps(results: Results, param: str) -> list[list[Run]]:
    """Groups of scored runs whose configurations differ only in `param` and the seed, with at least
    two levels of `param` (runs trained with another recipe form a sweep of their own)."""
    groups: dict[str, list[Run]] = {}
    for run in results.runs.values():
        if run.score is None or _level(run, param) is None:
            continue
        rest = {**run.config, "seed": None}
        if param == "train_examples":
            rest["dataset"] = {**rest.get("dataset", {}), "train_size": None}
        else:
            rest["params"] = {**rest.get("params", {}), param: None}
        groups.setdefault(json.dumps(rest, sort_keys=True), []).append(run)
    return [g for _, g in sorted(groups.items()) if len({_level(r, param) for r in g}) >= 2]


def trend(results: Results, claim: str, title: str, param: str, more_block_at: str) -> ClaimResult:
    """C1-C3. `more_block_at` is "max" or "min": the end of the sweep where the paper finds more block."""
    sign = 1 if more_block_at == "max" else -1
    label = "training examples" if param == "train_examples" else param
    meaning = (f"mean block score at the {'largest' if sign > 0 else 'smallest'} {label} minus the "
               f"{'smallest' if sign > 0 else 'largest'}, over seeds (standard error)")
    columns = ["sweep", label, "seeds", "block score (mean ± sd)", "mean eval acc"]
    result = ClaimResult(claim, title, None, None, NOT_ENOUGH, meaning, columns)
    verdicts = []
    for runs in sweeps(results, param):
        levels = sorted({_level(r, param) for r in runs})
        by_level = {lv: [r for r in runs if _level(r, param) == lv] for lv in levels}
        sweep = runs[0].spec or runs[0].family
        for lv in levels:
            scores = [r.score for r in by_level[lv]]
            accs = [r.eval_acc for r in by_level[lv] if r.eval_acc is not None]
            result.rows.append([sweep, lv, len(scores), f"{np.mean(scores):.3f} ± {np.std(scores, ddof=1) if len(scores) > 1 else 0:.3f}",
                                f"{np.mean(accs):.3f}" if accs else ""])
        result.figure.setdefault("series", []).append(
            {"label": sweep, "x": levels, "mean": [float(np.mean([r.score for r in by_level[lv]])) for lv in levels],
             "sd": [float(np.std([r.score for r in by_level[lv]])) for lv in levels]})
        if min(len(v) for v in by_level.values()) < MIN_SEEDS:
            continue
        high, low = (by_level[levels[-1]], by_level[levels[0]]) if sign > 0 else (by_level[levels[0]], by_level[levels[-1]])
        hs, ls = [r.score for r in high], [r.score for r in low]
        diff = float(np.mean(hs) - np.mean(ls))
        se = math.sqrt(np.var(hs, ddof=1) / len(hs) + np.var(ls, ddof=1) / len(ls))
        scores = [r.score for r in runs]
        # Spearman's rho is undefined when every score is equal (e.g. no block anywhere): no trend.
        rho = stats.spearmanr([_level(r, param) for r in runs], scores).statistic if len(set(scores)) > 1 else 0.0
        ok = diff > 0 and diff > TREND_SE * se and sign * rho >= MIN_RHO
        verdicts.append((diff, se, ok, rho, diff < -TREND_SE * se))
    result.figure.update(xlabel=label, ylabel="block score", log=param == "train_examples")
    if verdicts:
        diff, se = max(verdicts, key=lambda v: v[0])[:2]
        result.statistic, result.uncertainty = diff, se
        result.verdict = SUPPORTED if any(v[2] for v in verdicts) and not any(v[4] for v in verdicts) else NOT_SUPPORTED
        result.note = "Spearman rho (parameter vs block score): " + ", ".join(f"{v[3]:.2f}" for v in verdicts)
    return result


# --- C4: the first PC dominates inside blocks, and removing it dissolves them ----------------------

def pc1_dominance(results: Results) -> ClaimResult:
    result = ClaimResult("C4", "Inside a block the first principal component explains most of the variance, and removing it dissolves the block",
                         None, None, NOT_ENOUGH, "mean first-PC variance fraction inside blocks, over runs (standard error)",
                         ["run", "seed", "block", "PC1 fraction inside", "CKA inside", "CKA inside after PC1 removal", "dissolves"])
    pcs, dissolved = [], []
    for run in results.with_blocks():
        before, after = results.heatmap(run.run_id, False), results.heatmap(run.run_id, True)
        pc1 = dict(results.query("SELECT layer, pc1_fraction FROM pcs WHERE run_id = :r", r=run.run_id))
        for s, e in run.blocks:
            idx = np.arange(s, e + 1)
            off = ~np.eye(len(idx), dtype=bool)
            inside = float(np.mean([pc1[i] for i in idx if i in pc1]))
            cka_in = float(before[np.ix_(idx, idx)][off].mean()) if before is not None else float("nan")
            cka_out = float(after[np.ix_(idx, idx)][off].mean()) if after is not None else float("nan")
            gone = bool(cka_out < 0.75) if after is not None else None
            pcs.append(inside)
            if gone is not None:
                dissolved.append(gone)
            result.rows.append([run.name, run.seed, f"{s}-{e}", f"{inside:.3f}", f"{cka_in:.3f}", f"{cka_out:.3f}",
                                "" if gone is None else ("yes" if gone else "no")])
            result.figure.setdefault("bars", []).append({"label": f"{run.name} s{run.seed}", "before": cka_in, "after": cka_out})
    if pcs:
        result.statistic, result.uncertainty = _mean_se(pcs)
        share = float(np.mean(dissolved)) if dissolved else 0.0
        result.note = f"{sum(dissolved)} of {len(dissolved)} blocks dissolve after PC1 removal"
        result.verdict = SUPPORTED if result.statistic >= DOMINANT_PC1 and share >= DISSOLVE_FRACTION else NOT_SUPPORTED
    return result


# --- C5: similar outside blocks, not inside -----------------------------------------------------------

def cross_seed(results: Results) -> ClaimResult:
    result = ClaimResult("C5", "Outside blocks, representations of different seeds are similar; inside blocks they are not",
                         None, None, NOT_ENOUGH, "cross-seed CKA of the same layer, outside blocks minus inside, over seed pairs (standard error)",
                         ["architecture", "seeds", "CKA outside blocks", "CKA inside blocks", "gap"])
    cells = results.query(
        "SELECT c.run_a, c.run_b, c.layer_a, c.value FROM cka c JOIN analyses a USING (analysis_id) "
        "WHERE a.kind = 'cross_cka' AND c.run_a < c.run_b AND c.layer_a = c.layer_b AND NOT c.pc_removed "
        "AND c.epoch_a = c.epoch_b ORDER BY c.run_a, c.run_b, c.layer_a")
    pairs: dict[tuple[str, str], dict[int, float]] = {}
    for a, b, layer, v in cells:
        pairs.setdefault((a, b), {})[layer] = v
    gaps, outs = [], []
    for (a, b), diag in pairs.items():
        ra, rb = results.runs.get(a), results.runs.get(b)
        if ra is None or rb is None or ra.name != rb.name or not (ra.blocks and rb.blocks):
            continue
        blocks = ra.blocks + rb.blocks
        inside = [v for l, v in diag.items() if _inside(l, blocks)]
        outside = [v for l, v in diag.items() if not _inside(l, blocks)]
        if not inside or not outside:
            continue
        gap = float(np.mean(outside) - np.mean(inside))
        gaps.append(gap)
        outs.append(float(np.mean(outside)))
        result.rows.append([ra.name, f"{ra.seed} vs {rb.seed}", f"{np.mean(outside):.3f}", f"{np.mean(inside):.3f}", f"{gap:.3f}"])
        result.figure.setdefault("lines", []).append(
            {"label": f"{ra.name} s{ra.seed}/s{rb.seed}", "x": sorted(diag), "y": [diag[l] for l in sorted(diag)],
             "blocks": [list(x) for x in blocks]})
    if gaps:
        result.statistic, result.uncertainty = _mean_se(gaps)
        ok = result.statistic >= MIN_GAP and result.statistic > TREND_SE * result.uncertainty and np.mean(outs) >= HIGH_CKA
        result.verdict = SUPPORTED if ok else NOT_SUPPORTED
    return result


# --- C6: wide and deep models of similar accuracy err differently on some classes --------------------

def error_patterns(results: Results) -> ClaimResult:
    result = ClaimResult("C6", "Wide and deep models of similar accuracy differ significantly on some classes",
                         None, None, NOT_ENOUGH, "classes that differ significantly after Benjamini-Hochberg correction (smallest q-value)",
                         ["comparison", "group A accuracy", "group B accuracy", "classes flagged", "smallest q"])
    analyses = results.query("SELECT a.analysis_id, a.options FROM analyses a WHERE a.kind = 'errors' AND a.status = 'complete' "
                             "ORDER BY a.analysis_id")
    matched = []
    for aid, options in analyses:
        rows = results.query("SELECT class, mean_a, mean_b, q_value, significant FROM error_classes WHERE analysis_id = :a "
                             "ORDER BY class", a=aid)
        if not rows:
            continue
        acc_a, acc_b = float(np.mean([r[1] for r in rows])), float(np.mean([r[2] for r in rows]))
        flagged = [r[0] for r in rows if r[4]]
        qmin = float(np.nanmin([r[3] for r in rows if r[3] is not None] or [np.nan]))
        opts = json.loads(options or "{}")
        label = f"{_selector(opts.get('group_a'))} vs {_selector(opts.get('group_b'))}"
        result.rows.append([label, f"{acc_a:.3f}", f"{acc_b:.3f}", ", ".join(map(str, flagged)) or "none", f"{qmin:.3g}"])
        result.figure.setdefault("classes", []).append(
            {"label": label, "x": [r[0] for r in rows], "a": [r[1] for r in rows], "b": [r[2] for r in rows], "flagged": flagged})
        if abs(acc_a - acc_b) <= MATCHED_ACCURACY:
            matched.append((len(flagged), qmin))
    if matched:
        best = max(matched, key=lambda m: (m[0], -m[1]))
        result.statistic, result.uncertainty = float(best[0]), best[1]
        result.verdict = SUPPORTED if best[0] > 0 else NOT_SUPPORTED
    elif result.rows:
        result.note = f"no comparison has groups within {MATCHED_ACCURACY:.0%} accuracy of each other"
    return result


def _selector(sel) -> str:
    if sel is None:
        return "auto"
    if isinstance(sel, str):
        return sel
    return json.dumps(sel, sort_keys=True)


# --- C7: probes rise outside the block, stay flat across it ------------------------------------------

def probes(results: Results) -> ClaimResult:
    result = ClaimResult("C7", "Linear-probe accuracy rises outside the block and stays flat across it",
                         None, None, NOT_ENOUGH, "probe accuracy gained per layer outside the block minus inside it, over runs (standard error)",
                         ["run", "seed", "block", "gain per layer outside", "gain per layer inside", "gain across block"])
    diffs, flats = [], []
    for run in results.with_blocks():
        acc = dict(results.query("SELECT layer, accuracy FROM probes WHERE run_id = :r ORDER BY layer", r=run.run_id))
        if not acc:
            continue
        layers = sorted(acc)
        s, e = max(run.blocks, key=lambda b: b[1] - b[0])
        inside_gain = acc[e] - acc[s]
        outside_steps = (s - layers[0]) + (layers[-1] - e)
        if outside_steps == 0:
            continue
        outside_rate = ((acc[s] - acc[layers[0]]) + (acc[layers[-1]] - acc[e])) / outside_steps
        inside_rate = inside_gain / (e - s)
        diffs.append(outside_rate - inside_rate)
        flats.append(abs(inside_gain) <= FLAT_GAIN)
        result.rows.append([run.name, run.seed, f"{s}-{e}", f"{outside_rate:.4f}", f"{inside_rate:.4f}", f"{inside_gain:.3f}"])
        result.figure.setdefault("lines", []).append(
            {"label": f"{run.name} s{run.seed}", "x": layers, "y": [acc[l] for l in layers], "blocks": [[s, e]]})
    if diffs:
        result.statistic, result.uncertainty = _mean_se(diffs)
        result.verdict = SUPPORTED if result.statistic > 0 and all(flats) else NOT_SUPPORTED
        result.note = f"{sum(flats)} of {len(flats)} blocks gain at most {FLAT_GAIN:.0%} across the block"
    return result


# --- C8: deleting blocks inside the block structure hurts less -----------------------------------------

def deletion(results: Results) -> ClaimResult:
    result = ClaimResult("C8", "Deleting residual blocks inside the block structure costs less accuracy than deleting blocks outside it",
                         None, None, NOT_ENOUGH, "mean accuracy drop deleting one block outside the block structure minus inside, over runs (standard error)",
                         ["run", "seed", "block", "drop outside (mean)", "drop inside (mean)"])
    diffs = []
    for run in results.with_blocks():
        drops = results.query("SELECT start_layer, accuracy_drop FROM ablations WHERE run_id = :r "
                              "AND target NOT LIKE 'block:%' AND start_layer IS NOT NULL ORDER BY start_layer", r=run.run_id)
        inside = [d for l, d in drops if _inside(l, run.blocks)]
        outside = [d for l, d in drops if not _inside(l, run.blocks)]
        if not inside or not outside:
            continue
        diffs.append(float(np.mean(outside) - np.mean(inside)))
        result.rows.append([run.name, run.seed, ", ".join(f"{s}-{e}" for s, e in run.blocks),
                            f"{np.mean(outside):.4f}", f"{np.mean(inside):.4f}"])
        result.figure.setdefault("lines", []).append(
            {"label": f"{run.name} s{run.seed}", "x": [l for l, _ in drops], "y": [d for _, d in drops],
             "blocks": [list(b) for b in run.blocks]})
    if diffs:
        result.statistic, result.uncertainty = _mean_se(diffs)
        ok = result.statistic > 0 and result.statistic > TREND_SE * result.uncertainty
        result.verdict = SUPPORTED if ok else NOT_SUPPORTED
    return result


CLAIMS: list[Callable[[Results], ClaimResult]] = [
    lambda r: trend(r, "C1", "Block structure emerges and grows with depth at width 1", "depth", "max"),
    lambda r: trend(r, "C2", "Block structure emerges and grows with width at a fixed depth", "width", "max"),
    lambda r: trend(r, "C3", "A fixed architecture shows more block structure when trained on less data", "train_examples", "min"),
    pc1_dominance, cross_seed, error_patterns, probes, deletion,
]


def evaluate_claims(results: Results) -> list[ClaimResult]:
    return [claim(results) for claim in CLAIMS]
