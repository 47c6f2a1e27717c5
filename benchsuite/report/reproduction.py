"""docs/REPRODUCTION.md from the database: per claim the specs, a query, the measured table, a
figure and the verdict. Everything but the fixed prose below comes from stored results, and the
same database gives the same bytes."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from benchsuite.report import rules as R
from benchsuite.report.claims import ClaimResult, Results, evaluate_claims
from benchsuite.spec.load import config_key
from benchsuite.store import tables as t

QUERIES = {
    "C1": "SELECT depth, width, seed, score, largest_fraction FROM block_sizes ORDER BY width, depth, seed",
    "C2": "SELECT depth, width, seed, score, largest_fraction FROM block_sizes ORDER BY depth, width, seed",
    "C3": "SELECT name, train_examples, seed, score FROM block_sizes ORDER BY name, train_examples, seed",
    "C4": "SELECT r.name, r.seed, b.start_layer, b.end_layer, b.mean_pc1, b.mean_cka, b.survives_pc1_removal\n"
          "FROM blocks b JOIN runs r USING (run_id) ORDER BY r.name, r.seed",
    "C5": "SELECT ra.name, ra.seed AS seed_a, rb.seed AS seed_b, c.layer_a AS layer, c.value\n"
          "FROM cka c JOIN analyses a USING (analysis_id) JOIN runs ra ON ra.run_id = c.run_a JOIN runs rb ON rb.run_id = c.run_b\n"
          "WHERE a.kind = 'cross_cka' AND ra.name = rb.name AND c.layer_a = c.layer_b AND NOT c.pc_removed ORDER BY ALL",
    "C6": "SELECT name, seed, class, accuracy FROM class_accuracy ORDER BY name, class, seed",
    "C7": "SELECT name, seed, layer, layer_name, accuracy FROM probe_accuracy ORDER BY name, seed, layer",
    "C8": "SELECT r.name, r.seed, x.target, x.start_layer, x.accuracy_drop\n"
          "FROM ablations x JOIN runs r USING (run_id) ORDER BY r.name, r.seed, x.start_layer",
}

# The paper's setting per claim (Nguyen, Raghu & Kornblith 2021); ours is read from the runs each claim used.
PAPER = {
    "C1": "CIFAR-10/100 ResNets of depth 32-164 at width 1, 300 epochs",
    "C2": "CIFAR-10/100 ResNets widened up to 10x at depths 14-38, 300 epochs",
    "C3": "1/16 to all of CIFAR-10 for fixed architectures",
    "C4": "first PC of each layer over the test set, CKA recomputed without it, on CIFAR ResNets",
    "C5": "10 seeds per architecture on CIFAR-10/100",
    "C6": "wide and deep CIFAR ResNets of matched accuracy, 100 seeds each",
    "C7": "linear probes on CIFAR ResNet features",
    "C8": "deleting residual blocks of CIFAR ResNets",
}

SMOKE = ("`specs/repro/digits_*.yaml` declare the same four studies on scikit-learn's 8x8 digits. "
         "`tests/test_repro.py` runs them with tiny models and two epochs on every test run and regenerates a "
         "report like this one, so the whole path from specs to verdicts is checked in minutes. Its models "
         "are too small and its data too easy for its verdicts to be evidence.")


def _range(values) -> str:
    v = sorted(set(values))
    return "none" if not v else str(v[0]) if len(v) == 1 else ", ".join(map(str, v)) if len(v) <= 4 else f"{v[0]}-{v[-1]}"


def _setting(results: Results, run_ids: list[str]) -> str:
    """The settings of the runs a claim used, in one sentence."""
    runs = [results.runs[r] for r in run_ids if r in results.runs]
    if not runs:
        return "no run was used"
    seeds = Counter(config_key(r.config) for r in runs)
    parts = [f"{_range(r.dataset for r in runs)}, {_range(r.train_examples for r in runs)} training examples"]
    parts += [f"{k} {_range(r.params[k] for r in runs if k in r.params)}" for k in ("depth", "width")
              if any(k in r.params for r in runs)]
    parts += [f"{_range(r.config['train']['epochs'] for r in runs)} epochs",
              f"{_range(seeds.values())} trained seeds per setting, {len(runs)} runs"]
    return "; ".join(parts)


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4g}"


def _table(columns: list[str], rows: list[list]) -> str:
    if not rows:
        return "_No stored results for this claim yet._\n"
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    return head + "".join("| " + " | ".join(str(c) for c in r) + " |\n" for r in rows)


def store_claims(engine: Engine, scope: str, claims: list[ClaimResult]) -> None:
    with engine.begin() as conn:
        conn.execute(t.claims.delete().where(t.claims.c.scope == scope))
        conn.execute(t.claims.insert(), [dict(
            scope=scope, claim=c.claim, title=c.title, statistic=c.statistic, uncertainty=c.uncertainty,
            verdict=c.verdict, meaning=c.meaning, note=c.note,
            evidence=json.dumps({"columns": c.columns, "rows": c.rows, "figure": c.figure, "runs": c.runs},
                                sort_keys=True, default=str))
            for c in claims])


def _provenance(results: Results) -> str:
    """Specs, runs, time and hardware behind the report."""
    if not results.specs:
        return "No specs in the database yet: run the specs in specs/repro/ first.\n"
    lines = ["| spec | runs declared | complete | trained (evidence) | train + measure time (min) |", "|---|---|---|---|---|"]
    ids = set()
    for spec in results.specs:
        ids |= {e.run.run_id for e in spec.runs}
        rows = results.conn.execute(sa.select(t.runs.c.train_seconds, t.runs.c.measure_seconds).where(
            t.runs.c.run_id.in_([e.run.run_id for e in spec.runs]))).all()
        minutes = sum((a or 0) + (b or 0) for a, b in rows) / 60
        lines.append(f"| `{spec.name} ({Path(spec.path or '?').name})` | {len(spec.runs) + len(spec.missing)} | "
                     f"{len(spec.runs)} | {sum(e.trained for e in spec.runs)} | {minutes:.1f} |")
    meta = results.conn.execute(sa.select(t.runs.c.device, t.runs.c.versions, t.runs.c.git_commit).where(
        t.runs.c.run_id.in_(sorted(ids)))).all()
    devices = sorted({r[0] for r in meta if r[0]})
    versions = sorted({r[1] for r in meta if r[1]})
    commits = sorted({r[2] for r in meta if r[2]})
    out = "\n".join(lines) + (f"\n\nHardware: {', '.join(devices)}.  \nVersions: {'; '.join(versions)}.  \n"
                              f"Code that trained the runs: {', '.join(c[:12] for c in commits) or 'unknown'}.\n")
    if results.unreadable:
        out += "\nSpecs left out (their stored text no longer validates): " + "; ".join(results.unreadable) + "\n"
    excluded = results.excluded()
    out += "\n### Runs that are not evidence\n\n"
    out += _table(["spec", "run", "seed", "run_id", "reason"], [list(r) for r in excluded]) if excluded else "None.\n"
    return out


def evaluation_commit() -> str | None:
    """The last commit that changed the code evaluating the claims (this folder), not HEAD: the same evidence
    gives the same report, byte for byte, at every later commit that leaves the evaluation alone."""
    try:
        out = subprocess.run(["git", "log", "-1", "--format=%H", "--", "."], capture_output=True, text=True,
                             timeout=5, cwd=Path(__file__).parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _rules(commit: str | None) -> list[str]:
    out = [f"Rules version **{R.RULES_VERSION}** (`benchsuite/report/rules.py`), evaluated by the code of "
           f"`benchsuite/report/` as of commit `{(commit or 'unknown')[:12]}`. Changes to the rules:", ""]
    out += [f"- {version} ({where}): {what}" for version, where, what in R.CHANGELOG]
    return out + [""]


def _used(c: ClaimResult, claims: list[ClaimResult]) -> list[str]:
    if not c.runs:
        return ["Runs used: none.", ""]
    shared = [f"{o.claim} ({len(set(c.runs) & set(o.runs))})" for o in claims if o is not c and set(c.runs) & set(o.runs)]
    return [f"Runs used ({len(c.runs)}): " + ", ".join(f"`{r}`" for r in c.runs) + ".  ",
            "Shared with: " + (", ".join(shared) if shared else "no other claim") + ".", ""]


def render(engine: Engine, specs: list[str] | None = None, figures: Path | None = None,
           figures_link: str = "figures") -> tuple[str, list[ClaimResult]]:
    """The report's Markdown, and the claims it evaluated (their figures written to `figures`)."""
    from benchsuite.report.figures import claim_figure

    results = Results(engine, specs)
    try:
        claims = evaluate_claims(results)
        provenance = _provenance(results)
        settings = {c.claim: _setting(results, c.runs) for c in claims}
    finally:
        results.close()
    out = ["# Reproducing Nguyen, Raghu & Kornblith (2021) with benchsuite", "",
           "Generated by `bench claims --write docs/REPRODUCTION.md` from the results database. Each verdict comes",
           "from the pre-registered rules below applied to stored results of trained runs. Do not edit by hand:",
           "rerun the specs and the report.", "", *_rules(evaluation_commit()),
           "## Summary", "", "| claim | verdict | statistic | ± | what the statistic is |", "|---|---|---|---|---|"]
    out += [f"| {c.claim} {c.title} | **{c.verdict}** | {_fmt(c.statistic)} | {_fmt(c.uncertainty)} | {c.meaning} |"
            for c in claims]
    out += ["", "## Runs", "", provenance]
    for c in claims:
        spread = f" ± {_fmt(c.uncertainty)}" if c.uncertainty is not None else ""
        out += [f"## {c.claim}: {c.title}", "", f"**Verdict: {c.verdict}.** Statistic: {_fmt(c.statistic)}{spread} "
                f"({c.meaning}).", ""]
        if c.note:
            out += [c.note + ".", ""]
        out += _used(c, claims)
        out += ["Query:", "", "```sql", QUERIES[c.claim], "```", "", "Measured:", "", _table(c.columns, c.rows)]
        if figures is not None and claim_figure(c, figures / f"{c.claim}.svg"):
            out += [f"![{c.claim}]({figures_link}/{c.claim}.svg)", ""]
        out += [f"Setting: the paper used {PAPER[c.claim]}; here {settings[c.claim]}.", ""]
    out += ["## The smoke study", "", SMOKE]
    return "\n".join(out).rstrip() + "\n", claims
