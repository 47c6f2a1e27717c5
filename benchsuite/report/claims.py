"""The claims of Nguyen, Raghu & Kornblith (2021), each evaluated over stored results by the rules in
rules.py (versioned; read that module's docstring for what each claim tests).

Every claim yields a statistic, its uncertainty where there is one, a verdict ("supported", "not
supported", "not enough runs"), the table of evidence and the ids of the runs it used. Evidence is
read per spec: the runs a spec's stored text declares, through the analyses that spec declares, so
two measurement settings of one run never mix.
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

from benchsuite.errors import BenchError
from benchsuite.report import rules as R
from benchsuite.spec.load import config_key
from benchsuite.store import tables as t

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
    runs: list[str] = field(default_factory=list)  # ids of the runs whose values decided it


@dataclass
class Run:
    run_id: str
    name: str
    params: dict
    dataset: str
    train_examples: int
    seed: int
    eval_acc: float | None
    config: dict  # the run's full configuration (RunConfig as JSON)
    status: str = "complete"
    error: str | None = None


@dataclass
class Evidence:
    """One run as one spec measured it."""

    run: Run
    spec: str
    analyses: dict[str, str] = field(default_factory=dict)  # kind -> id of the spec's complete analysis
    detector: Any = None  # BlockParams of the spec's blocks analysis
    score: float | None = None
    blocks: list[tuple[int, int]] = field(default_factory=list)
    excluded: str = ""  # why the run is not evidence ("" when it is)

    @property
    def trained(self) -> bool:
        return not self.excluded


@dataclass
class SpecEvidence:
    name: str
    path: str
    measure_id: str
    runs: list[Evidence]  # the declared runs that are complete, in grid order
    missing: list[tuple[str, int, str, str]]  # (name, seed, run_id, reason) of declared runs without results
    missing_configs: list[dict] = field(default_factory=list)  # their configurations, in the same order
    cross_cka: list[str] = field(default_factory=list)  # ids of the spec's cross_cka analyses (across seeds)


class Results:
    """The stored results a claims report reads, loaded once. `specs`: spec names (their newest stored
    version each); None: every spec in the database."""

    def __init__(self, engine: Engine, specs: list[str] | None = None):
        self.engine = engine
        # One connection for every query of the report: a DuckDB connection costs ~0.1 s to open.
        self.conn = engine.connect()
        stored: dict[str, tuple] = {}
        for name, path, text in self.query("SELECT name, path, yaml FROM specs ORDER BY created_at, spec_hash"):
            stored[name] = (path, text)  # the newest version of each name wins
        if specs:
            unknown = sorted(set(specs) - set(stored))
            if unknown:
                raise BenchError(f"--spec {', '.join(unknown)}: no such spec in the database; "
                                 f"stored specs: {', '.join(sorted(stored)) or 'none'}")
        self.runs: dict[str, Run] = {}
        for r in self.query(
                "SELECT r.run_id, r.name, r.params, r.dataset, r.train_examples, r.seed, a.eval_acc, r.config, r.status, r.error "
                "FROM runs r LEFT JOIN run_accuracy a ON a.run_id = r.run_id ORDER BY r.run_id"):
            self.runs[r[0]] = Run(r[0], r[1], json.loads(r[2]), r[3], r[4], r[5], r[6], json.loads(r[7]), r[8], r[9])
        self.analyses = {aid: (kind, json.loads(opts or "{}"), set(json.loads(ids)), mid) for aid, kind, opts, ids, mid in
                         self.query("SELECT analysis_id, kind, options, run_ids, measure_id FROM analyses WHERE status = 'complete'")}
        self.unreadable: list[str] = []
        self.specs = [s for name in sorted(specs or stored) if (s := self._spec(name, *stored[name])) is not None]

    def _spec(self, name: str, path: str, text: str) -> SpecEvidence | None:
        from benchsuite.measure.blocks import BlockParams
        from benchsuite.runner.analyses import analysis_id, measure_id, per_run_kinds
        from benchsuite.spec import expand, parse_spec, run_id, run_name

        try:
            spec = parse_spec(text, name)
            configs = expand(spec)
        except BenchError as err:  # stored by an older version whose spec language differed
            self.unreadable.append(f"{name}: {err}")
            return None
        measure = spec.measure.analysis_key()
        out = SpecEvidence(name, path or "", measure_id(spec.measure.identity()), [], [])
        for config in configs:
            rid = run_id(config)
            run = self.runs.get(rid)
            if run is None or run.status != "complete":
                reason = "not in the database" if run is None else f"{run.status}" + (f": {run.error}" if run.error else "")
                out.missing.append((run_name(config), config.seed, rid, reason))
                out.missing_configs.append(config.model_dump(mode="json"))
                continue
            ev = Evidence(run, name)
            for a in spec.analyses:
                aid = analysis_id(a.kind, a.options, [rid], measure) if a.kind in per_run_kinds() else None
                if aid in self.analyses:
                    ev.analyses[a.kind] = aid
                    if a.kind == "blocks":
                        ev.detector = BlockParams(**a.options)
            out.runs.append(ev)
        ids = {e.run.run_id for e in out.runs}
        out.cross_cka = sorted(aid for aid, (kind, opts, runs, mid) in self.analyses.items()
                               if kind == "cross_cka" and opts.get("across", "seeds") in ("seeds", "all")
                               and mid == out.measure_id and runs <= ids
                               and any(a.kind == "cross_cka" and a.options == opts for a in spec.analyses))
        self._blocks(out)
        self._apply_evidence_rule(out)
        return out

    def _blocks(self, spec: SpecEvidence) -> None:
        by_aid = {e.analyses["blocks"]: e for e in spec.runs if "blocks" in e.analyses}
        scores, blocks = t.block_scores, t.blocks
        for aid, score in self.conn.execute(sa.select(scores.c.analysis_id, scores.c.score)
                                            .where(scores.c.analysis_id.in_(list(by_aid)))):
            by_aid[aid].score = score
        for aid, s, e in self.conn.execute(sa.select(blocks.c.analysis_id, blocks.c.start_layer, blocks.c.end_layer)
                                           .where(blocks.c.analysis_id.in_(list(by_aid)))
                                           .order_by(blocks.c.analysis_id, blocks.c.start_layer)):
            by_aid[aid].blocks.append((s, e))

    def _apply_evidence_rule(self, spec: SpecEvidence) -> None:
        sweeps: dict[str, list[Evidence]] = {}
        for e in spec.runs:
            sweeps.setdefault(config_key(e.run.config, ("seed", "family", "params")), []).append(e)
        for group in sweeps.values():
            arch: dict[str, list[float]] = {}
            for e in group:
                if e.run.eval_acc is not None:
                    arch.setdefault(config_key(e.run.config), []).append(e.run.eval_acc)
            best = max((float(np.mean(v)) for v in arch.values()), default=None)
            for e in group:
                chance = self._chance(e)
                acc = e.run.eval_acc
                if acc is None:
                    e.excluded = "no evaluation accuracy stored"
                elif chance is None:
                    e.excluded = "chance level unknown (dataset not in rules.DATASET_CLASSES, no predictions stored)"
                elif acc < chance + R.ABOVE_CHANCE * (1 - chance):
                    e.excluded = f"accuracy {acc:.3f} < {chance + R.ABOVE_CHANCE * (1 - chance):.3f} (near chance {chance:.3f})"
                elif acc < best - R.TRAINED_MARGIN:
                    e.excluded = f"accuracy {acc:.3f} < best architecture {best:.3f} - {R.TRAINED_MARGIN}"

    def _chance(self, e: Evidence) -> float | None:
        classes = R.DATASET_CLASSES.get(e.run.dataset)
        if classes is None and "predictions" in e.analyses:
            classes = self.query("SELECT count(DISTINCT label) FROM predictions WHERE analysis_id = :a",
                                 a=e.analyses["predictions"])[0][0]
        return 1.0 / classes if classes else None

    def query(self, sql: str, **params) -> list[tuple]:
        return [tuple(r) for r in self.conn.execute(sa.text(sql), params)]

    def close(self) -> None:
        self.conn.close()

    def evidence(self) -> list[Evidence]:
        """Every trained run with its spec's measurements, each (run, measurement) once."""
        seen, out = set(), []
        for spec in self.specs:
            for e in spec.runs:
                key = (e.run.run_id, tuple(sorted(e.analyses.items())))
                if e.trained and key not in seen:
                    seen.add(key)
                    out.append(e)
        return out

    def with_blocks(self) -> list[Evidence]:
        return [e for e in self.evidence() if e.blocks]

    def excluded(self) -> list[tuple[str, str, int, str, str]]:
        """(spec, run name, seed, run_id, reason) of every declared run that is not evidence."""
        out = [(s.name, n, seed, rid, why) for s in self.specs for n, seed, rid, why in s.missing]
        out += [(s.name, e.run.name, e.run.seed, e.run.run_id, e.excluded) for s in self.specs for e in s.runs if e.excluded]
        return sorted(out)

    def heatmap(self, e: Evidence, pc_removed: bool) -> np.ndarray | None:
        """The run's within-model heatmap from its spec's cka (or, after PC1 removal, pcs) analysis."""
        aid = e.analyses.get("pcs" if pc_removed else "cka")
        if aid is None:
            return None
        cells = self.query("SELECT layer_a, layer_b, value FROM cka WHERE analysis_id = :a AND run_a = :r AND run_b = :r "
                           "AND pc_removed = :p", a=aid, r=e.run.run_id, p=pc_removed)
        if not cells:
            return None
        n = max(max(a, b) for a, b, _ in cells) + 1
        m = np.full((n, n), np.nan)
        for a, b, v in cells:
            m[a, b] = v
        return m

    def per_layer(self, e: Evidence, kind: str, sql: str) -> list[tuple]:
        aid = e.analyses.get(kind)
        return [] if aid is None else self.query(sql, a=aid, r=e.run.run_id)


def _mean_se(values) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else 0.0


def _inside(layer: int, blocks: list[tuple[int, int]]) -> bool:
    return any(s <= layer <= e for s, e in blocks)


def _label(e: Evidence) -> str:
    return f"{e.run.name} s{e.run.seed}"


# --- C1-C3: block structure grows with depth, with width, and with less data ---------------------

def _declared(config: dict, param: str):
    """A run's level in a sweep as its spec declares it (a training-set size may be a fraction)."""
    return config["dataset"]["train_size"] if param == "train_examples" else config["params"].get(param)


def _level(run: Run, param: str):
    return run.train_examples if param == "train_examples" else run.params.get(param)


def sweeps(results: Results, param: str, only: dict | None = None) -> list[tuple[str, dict[Any, list[Evidence]]]]:
    """Per spec, its declared runs with the parameters in `only` grouped by everything but `param` and the
    seed (two levels or more): (label, {declared level: the level's trained runs with a block score}). A
    level whose runs failed or were excluded by the evidence rule is kept, with fewer (or no) runs."""
    drop = ("seed", "dataset.train_size") if param == "train_examples" else ("seed", f"params.{param}")
    out = []
    for spec in results.specs:
        groups: dict[str, dict[Any, list[Evidence]]] = {}
        declared = [(e.run.config, e) for e in spec.runs] + [(c, None) for c in spec.missing_configs]
        for config, e in declared:
            if _declared(config, param) is None and param != "train_examples":
                continue
            if any(config["params"].get(k, v) != v for k, v in (only or {}).items()):
                continue
            level = groups.setdefault(config_key(config, drop), {}).setdefault(json.dumps(_declared(config, param)), [])
            if e is not None and e.trained and e.score is not None:
                level.append(e)
        for key, levels in groups.items():
            if len(levels) < 2:
                continue
            fixed = json.loads(key)
            context = ", ".join(f"{k}={v}" for k, v in sorted(fixed.get("params", {}).items()) if k in ("depth", "width"))
            if param != "train_examples":
                context += f"{', ' if context else ''}train_size={fixed['dataset'].get('train_size')}"
            out.append((f"{spec.name} ({context})", levels))
    return out


def trend(results: Results, claim: str, title: str, param: str, more_block_at: str, only: dict | None = None) -> ClaimResult:
    """C1-C3. `more_block_at` is "max" or "min": the end of the sweep where the paper finds more block;
    `only`: parameter values a sweep must have (families without the parameter qualify)."""
    sign = 1 if more_block_at == "max" else -1
    label = "training examples" if param == "train_examples" else param
    meaning = (f"mean block score at the {'largest' if sign > 0 else 'smallest'} {label} minus the "
               f"{'smallest' if sign > 0 else 'largest'}, over seeds (standard error)")
    columns = ["sweep", label, "trained seeds", "block score (mean ± sd)", "mean eval acc", "sweep verdict"]
    result = ClaimResult(claim, title, None, None, NOT_ENOUGH, meaning, columns)
    evaluated, notes = [], []
    for sweep, declared in sweeps(results, param, only):
        def shown(lv):  # what the table shows: training examples where a run measured them
            runs = declared[lv]
            return _level(runs[0].run, param) if runs else json.loads(lv)

        levels = sorted(declared, key=lambda lv: float("inf") if shown(lv) is None else shown(lv))  # None: all data
        by_level = {lv: declared[lv] for lv in levels}
        if min(len(v) for v in by_level.values()) < R.MIN_SEEDS:
            lost = [str(shown(lv)) for lv, v in by_level.items() if len(v) < R.MIN_SEEDS]
            verdict = f"not enough runs ({label} {', '.join(lost)}: fewer than {R.MIN_SEEDS} trained seeds)"
            notes.append(f"{sweep}: {verdict}")
        else:
            high, low = (by_level[levels[-1]], by_level[levels[0]]) if sign > 0 else (by_level[levels[0]], by_level[levels[-1]])
            hs, ls = [e.score for e in high], [e.score for e in low]
            diff = float(np.mean(hs) - np.mean(ls))
            se = math.sqrt(np.var(hs, ddof=1) / len(hs) + np.var(ls, ddof=1) / len(ls))
            used = [e for v in by_level.values() for e in v]
            scores = [e.score for e in used]
            # Spearman's rho is undefined when every score is equal (e.g. no block anywhere): no trend.
            rho = stats.spearmanr([_level(e.run, param) for e in used], scores).statistic if len(set(scores)) > 1 else 0.0
            any_block = any(e.blocks for e in used)
            if diff > R.TREND_SE * se and sign * rho >= R.MIN_RHO:
                verdict = "supports"
            elif diff < -R.TREND_SE * se:
                verdict = "contradicts"
            else:
                verdict = "no block" if not any_block else "neither"
            evaluated.append((diff, se, verdict, any_block))
            result.runs += [e.run.run_id for e in used]
            notes.append(f"{sweep}: {verdict}, statistic {diff:.4f} ± {se:.4f}, Spearman rho {rho:.2f}")
        for lv in levels:
            kept = by_level[lv]
            scores = [e.score for e in kept]
            accs = [e.run.eval_acc for e in kept]
            result.rows.append([sweep, shown(lv), len(kept),
                                f"{np.mean(scores):.3f} ± {np.std(scores, ddof=1) if len(scores) > 1 else 0:.3f}" if kept else "",
                                f"{np.mean(accs):.3f}" if kept else "", verdict])
        result.figure.setdefault("series", []).append(
            {"label": sweep, "x": [shown(lv) for lv in levels if by_level[lv]],
             "mean": [float(np.mean([e.score for e in by_level[lv]])) for lv in levels if by_level[lv]],
             "sd": [float(np.std([e.score for e in by_level[lv]])) for lv in levels if by_level[lv]]})
    result.figure.update(xlabel=label, ylabel="block score (trained runs)", log=param == "train_examples")
    result.runs = sorted(set(result.runs))
    result.note = "; ".join(notes) or "no sweep is evaluable"
    if evaluated:
        headline = min([v for v in evaluated if v[3]] or evaluated, key=lambda v: v[0])
        result.statistic, result.uncertainty = headline[0], headline[1]
        verdicts = {v[2] for v in evaluated}
        result.verdict = SUPPORTED if "supports" in verdicts and "contradicts" not in verdicts else NOT_SUPPORTED
    return result


# --- C4: the first PC dominates inside blocks, and removing it dissolves them ----------------------

def pc1_dominance(results: Results) -> ClaimResult:
    result = ClaimResult("C4", "Inside a block the first principal component explains most of the variance, and removing it dissolves the block",
                         None, None, NOT_ENOUGH, "mean PC1 fraction inside blocks minus outside them, over blocks (standard error)",
                         ["run", "seed", "block", "PC1 inside", "PC1 outside", "CKA inside", "CKA inside after PC1 removal",
                          "detector min_cka", "dissolves"])
    contrasts, dissolved = [], []
    for e in results.with_blocks():
        before, after = results.heatmap(e, False), results.heatmap(e, True)
        pc1 = dict(results.per_layer(e, "pcs", "SELECT layer, pc1_fraction FROM pcs WHERE analysis_id = :a AND run_id = :r"))
        outside = [v for layer, v in pc1.items() if not _inside(layer, e.blocks)]
        if after is None or not outside:
            continue  # nothing to compare against: no PC1-removed heatmap, or every layer in a block
        for s, end in e.blocks:
            idx = np.arange(s, end + 1)
            off = ~np.eye(len(idx), dtype=bool)
            inside = float(np.mean([pc1[i] for i in idx if i in pc1]))
            contrast = inside - float(np.mean(outside))
            cka_in = float(before[np.ix_(idx, idx)][off].mean()) if before is not None else float("nan")
            cka_after = float(after[np.ix_(idx, idx)][off].mean())
            gone = bool(cka_after < e.detector.min_cka)
            contrasts.append(contrast)
            dissolved.append(gone)
            result.runs.append(e.run.run_id)
            result.rows.append([e.run.name, e.run.seed, f"{s}-{end}", f"{inside:.3f}", f"{np.mean(outside):.3f}",
                                f"{cka_in:.3f}", f"{cka_after:.3f}", e.detector.min_cka, "yes" if gone else "no"])
            result.figure.setdefault("bars", []).append({"label": _label(e), "before": cka_in, "after": cka_after})
    result.runs = sorted(set(result.runs))
    if len(contrasts) >= R.MIN_BLOCKS:
        result.statistic, result.uncertainty = _mean_se(contrasts)
        share = float(np.mean(dissolved))
        result.note = f"{sum(dissolved)} of {len(dissolved)} blocks dissolve after PC1 removal"
        ok = (result.statistic >= R.MIN_PC1_CONTRAST and result.statistic > R.TREND_SE * result.uncertainty
              and share >= R.DISSOLVE_FRACTION)
        result.verdict = SUPPORTED if ok else NOT_SUPPORTED
    else:
        result.note = f"{len(contrasts)} blocks of trained runs with layers outside them; the rule needs {R.MIN_BLOCKS}"
    return result


# --- C5: similar outside blocks, not inside -----------------------------------------------------------

def cross_seed(results: Results) -> ClaimResult:
    result = ClaimResult("C5", "Outside blocks, representations of different seeds are similar; inside blocks they are not",
                         None, None, NOT_ENOUGH, "cross-seed CKA of the same layer, outside blocks minus inside, over seed pairs (standard error)",
                         ["architecture", "seeds", "CKA outside blocks", "CKA inside blocks", "gap"])
    gaps, outs, seen = [], [], set()
    for spec in results.specs:
        ev = {e.run.run_id: e for e in spec.runs if e.trained and e.blocks}
        for aid in spec.cross_cka:
            pairs: dict[tuple[str, str], dict[int, float]] = {}
            for a, b, layer, v in results.query(
                    "SELECT run_a, run_b, layer_a, value FROM cka WHERE analysis_id = :a AND run_a < run_b "
                    "AND layer_a = layer_b AND NOT pc_removed ORDER BY run_a, run_b, layer_a", a=aid):
                if a in ev and b in ev:
                    pairs.setdefault((a, b), {})[layer] = v
            for (a, b), diag in sorted(pairs.items()):
                ea, eb = ev[a], ev[b]
                if config_key(ea.run.config) != config_key(eb.run.config) or (a, b) in seen:
                    continue  # seeds of one setting only; a pair measured by two specs counts once
                blocks = ea.blocks + eb.blocks
                inside = [v for layer, v in diag.items() if _inside(layer, blocks)]
                outside = [v for layer, v in diag.items() if not _inside(layer, blocks)]
                if not inside or not outside:
                    continue
                seen.add((a, b))
                gap = float(np.mean(outside) - np.mean(inside))
                gaps.append(gap)
                outs.append(float(np.mean(outside)))
                result.runs += [a, b]
                result.rows.append([ea.run.name, f"{ea.run.seed} vs {eb.run.seed}", f"{np.mean(outside):.3f}",
                                    f"{np.mean(inside):.3f}", f"{gap:.3f}"])
                result.figure.setdefault("lines", []).append(
                    {"label": f"{ea.run.name} s{ea.run.seed}/s{eb.run.seed}", "x": sorted(diag),
                     "y": [diag[layer] for layer in sorted(diag)], "blocks": [list(x) for x in blocks]})
    result.runs = sorted(set(result.runs))
    if gaps:
        result.statistic, result.uncertainty = _mean_se(gaps)
        ok = (result.statistic >= R.MIN_GAP and result.statistic > R.TREND_SE * result.uncertainty
              and np.mean(outs) >= R.HIGH_CKA)
        result.verdict = SUPPORTED if ok else NOT_SUPPORTED
    return result


# --- C6: wide and deep models of similar accuracy err differently on some classes --------------------

def _wide_deep_pairs(spec: SpecEvidence) -> list[tuple[list[Evidence], list[Evidence]]]:
    """(wide, deep) architectures of the spec on one data set and recipe: wider and shallower against
    narrower and deeper, each with C6_MIN_SEEDS trained runs that have predictions."""
    arch: dict[str, list[Evidence]] = {}
    for e in spec.runs:
        if e.trained and "predictions" in e.analyses and {"depth", "width"} <= set(e.run.params):
            arch.setdefault(config_key(e.run.config), []).append(e)
    groups = [g for g in arch.values() if len(g) >= R.C6_MIN_SEEDS]
    out = []
    for wide in groups:
        for deep in groups:
            pw, pd = wide[0].run.params, deep[0].run.params
            same_data = (config_key(wide[0].run.config, ("seed", "family", "params"))
                         == config_key(deep[0].run.config, ("seed", "family", "params")))
            if same_data and pw["width"] > pd["width"] and pw["depth"] < pd["depth"]:
                out.append((wide, deep))
    return out


def error_patterns(results: Results) -> ClaimResult:
    from benchsuite.analyses.errors import benjamini_hochberg, class_accuracy, welch

    result = ClaimResult("C6", "Wide and deep models of similar accuracy differ significantly on some classes",
                         None, None, NOT_ENOUGH,
                         f"classes whose accuracy differs between matched wide and deep architectures (Welch over seeds, "
                         f"Benjamini-Hochberg at FDR {R.FDR} over every class of every matched pair)",
                         ["spec", "wide (A)", "deep (B)", "seeds A/B", "accuracy A", "accuracy B", "classes flagged",
                          "q-values of flagged (smallest q if none)"])
    tests, notes = [], []
    for spec in results.specs:
        for wide, deep in _wide_deep_pairs(spec):
            preds = {}
            for e in wide + deep:
                rows = results.per_layer(e, "predictions", "SELECT label, prediction FROM predictions WHERE analysis_id = :a "
                                                           "AND run_id = :r ORDER BY example")
                preds[e.run.run_id] = np.array(rows)
            labels = preds[wide[0].run.run_id][:, 0]
            if any(not np.array_equal(p[:, 0], labels) for p in preds.values()):
                continue  # evaluated on different examples: not comparable
            acc_a = float(np.mean([e.run.eval_acc for e in wide]))
            acc_b = float(np.mean([e.run.eval_acc for e in deep]))
            if abs(acc_a - acc_b) > R.MATCHED_ACCURACY:
                notes.append(f"{wide[0].run.name} vs {deep[0].run.name}: accuracy {acc_a:.3f} vs {acc_b:.3f}, not matched")
                continue
            classes = np.unique(labels)

            def per_class(group):
                return class_accuracy(np.stack([preds[e.run.run_id][:, 1] == labels for e in group]), labels, classes)

            ca, cb = per_class(wide), per_class(deep)
            _, p = welch(ca, cb)
            tests.append((spec.name, wide, deep, acc_a, acc_b, classes, ca.mean(0), cb.mean(0), p))
    if not tests:
        result.note = "; ".join(notes) or (f"no spec has a wide-shallow and a deep-narrow architecture with "
                                            f"{R.C6_MIN_SEEDS}+ trained seeds and stored predictions")
        return result
    q = benjamini_hochberg(np.concatenate([t[-1] for t in tests]))
    offset, flagged_total = 0, 0
    for spec, wide, deep, acc_a, acc_b, classes, ma, mb, p in tests:
        qs = q[offset:offset + len(classes)]
        offset += len(classes)
        flagged = [int(c) for c, qv in zip(classes, qs) if qv <= R.FDR]
        flagged_total += len(flagged)
        shown = ", ".join(f"{qv:.3g}" for qv in qs[qs <= R.FDR]) if flagged else f"{np.nanmin(qs):.3g}"
        result.rows.append([spec, wide[0].run.name, deep[0].run.name, f"{len(wide)}/{len(deep)}", f"{acc_a:.3f}",
                            f"{acc_b:.3f}", ", ".join(map(str, flagged)) or "none", shown])
        result.figure.setdefault("classes", []).append(
            {"label": f"{wide[0].run.name} vs {deep[0].run.name}", "x": [int(c) for c in classes],
             "a": [float(v) for v in ma], "b": [float(v) for v in mb], "flagged": flagged})
        result.runs += [e.run.run_id for e in wide + deep]
    result.runs = sorted(set(result.runs))
    result.statistic = float(flagged_total)
    result.verdict = SUPPORTED if flagged_total else NOT_SUPPORTED
    result.note = "; ".join(notes)
    return result


# --- C7: probes rise outside the block, stay flat across it ------------------------------------------

def probes(results: Results) -> ClaimResult:
    result = ClaimResult("C7", "Linear-probe accuracy rises outside the block and stays flat across it",
                         None, None, NOT_ENOUGH, "probe accuracy gained per layer outside the block minus inside it, over runs (standard error)",
                         ["run", "seed", "block", "gain per layer outside", "gain per layer inside", "gain across block"])
    diffs, flats = [], []
    for e in results.with_blocks():
        acc = dict(results.per_layer(e, "probes", "SELECT layer, accuracy FROM probes WHERE analysis_id = :a "
                                                  "AND run_id = :r ORDER BY layer"))
        if not acc:
            continue
        layers = sorted(acc)
        s, end = max(e.blocks, key=lambda b: b[1] - b[0])
        if s not in acc or end not in acc:
            continue
        inside_gain = acc[end] - acc[s]
        outside_steps = (s - layers[0]) + (layers[-1] - end)
        if outside_steps == 0:
            continue
        outside_rate = ((acc[s] - acc[layers[0]]) + (acc[layers[-1]] - acc[end])) / outside_steps
        inside_rate = inside_gain / (end - s)
        diffs.append(outside_rate - inside_rate)
        flats.append(abs(inside_gain) <= R.FLAT_GAIN)
        result.runs.append(e.run.run_id)
        result.rows.append([e.run.name, e.run.seed, f"{s}-{end}", f"{outside_rate:.4f}", f"{inside_rate:.4f}", f"{inside_gain:.3f}"])
        result.figure.setdefault("lines", []).append(
            {"label": _label(e), "x": layers, "y": [acc[layer] for layer in layers], "blocks": [[s, end]]})
    result.runs = sorted(set(result.runs))
    if diffs:
        result.statistic, result.uncertainty = _mean_se(diffs)
        result.verdict = SUPPORTED if result.statistic > 0 and all(flats) else NOT_SUPPORTED
        result.note = f"{sum(flats)} of {len(flats)} blocks gain at most {R.FLAT_GAIN:.0%} across the block"
    return result


# --- C8: deleting blocks inside the block structure hurts less -----------------------------------------

def deletion(results: Results) -> ClaimResult:
    result = ClaimResult("C8", "Deleting residual blocks inside the block structure costs less accuracy than deleting blocks outside it",
                         None, None, NOT_ENOUGH, "mean accuracy drop deleting one block outside the block structure minus inside, over runs (standard error)",
                         ["run", "seed", "block", "drop outside (mean)", "drop inside (mean)"])
    diffs = []
    for e in results.with_blocks():
        drops = results.per_layer(e, "ablation", "SELECT start_layer, accuracy_drop FROM ablations WHERE analysis_id = :a "
                                                 "AND run_id = :r AND target NOT LIKE 'block:%' AND start_layer IS NOT NULL "
                                                 "ORDER BY start_layer")
        inside = [d for layer, d in drops if _inside(layer, e.blocks)]
        outside = [d for layer, d in drops if not _inside(layer, e.blocks)]
        if not inside or not outside:
            continue
        diffs.append(float(np.mean(outside) - np.mean(inside)))
        result.runs.append(e.run.run_id)
        result.rows.append([e.run.name, e.run.seed, ", ".join(f"{s}-{end}" for s, end in e.blocks),
                            f"{np.mean(outside):.4f}", f"{np.mean(inside):.4f}"])
        result.figure.setdefault("lines", []).append(
            {"label": _label(e), "x": [layer for layer, _ in drops], "y": [d for _, d in drops],
             "blocks": [list(b) for b in e.blocks]})
    result.runs = sorted(set(result.runs))
    if diffs:
        result.statistic, result.uncertainty = _mean_se(diffs)
        ok = result.statistic > 0 and result.statistic > R.TREND_SE * result.uncertainty
        result.verdict = SUPPORTED if ok else NOT_SUPPORTED
    return result


CLAIMS: list[Callable[[Results], ClaimResult]] = [
    lambda r: trend(r, "C1", "Block structure emerges and grows with depth at width 1", "depth", "max", {"width": 1}),
    lambda r: trend(r, "C2", "Block structure emerges and grows with width at a fixed depth", "width", "max"),
    lambda r: trend(r, "C3", "A fixed architecture shows more block structure when trained on less data", "train_examples", "min"),
    pc1_dominance, cross_seed, error_patterns, probes, deletion,
]


def evaluate_claims(results: Results) -> list[ClaimResult]:
    return [claim(results) for claim in CLAIMS]
