"""docs/REPRODUCTION.md from the database: per claim the specs, a query, the measured table, a
figure and the verdict. Everything but the fixed prose below comes from stored results, and the
same database gives the same bytes."""

from __future__ import annotations

import json
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from benchsuite.report.claims import ClaimResult, Results, evaluate_claims
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
    "C6": "SELECT class, mean_a, mean_b, p_value, q_value, significant FROM error_classes ORDER BY analysis_id, class",
    "C7": "SELECT name, seed, layer, layer_name, accuracy FROM probe_accuracy ORDER BY name, seed, layer",
    "C8": "SELECT r.name, r.seed, x.target, x.start_layer, x.accuracy_drop\n"
          "FROM ablations x JOIN runs r USING (run_id) ORDER BY r.name, r.seed, x.start_layer",
}

DIFFERENCES = {
    "C1": "The paper trains CIFAR-10/100 ResNets of depth 32-164 for 300 epochs; here 8x8 digits, depths 8-110, a few epochs on 2 CPU cores.",
    "C2": "The paper widens ResNets up to 10x at depths 14-38 on CIFAR; here widths up to 8x on 8x8 digits, with fewer epochs.",
    "C3": "The paper trains on 1/16 to all of CIFAR-10; here fractions of the 1,258 digits training images.",
    "C4": "Same measurement as the paper (first PC of each layer over the evaluation set, CKA recomputed without it), on CPU-sized models.",
    "C5": "The paper compares 10 seeds per architecture on CIFAR; here the seeds of the repro specs, on digits.",
    "C6": "The paper compares wide and deep ResNets of matched accuracy over 100 seeds on CIFAR-10/100; here a handful of seeds on digits, where accuracy is near ceiling and per-class differences are small.",
    "C7": "The paper fits probes on CIFAR features; here logistic-regression probes on pooled features of digits models.",
    "C8": "The paper deletes blocks of CIFAR ResNets; here the same deletion (skip a residual branch) on digits models.",
}


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
            evidence=json.dumps({"columns": c.columns, "rows": c.rows, "figure": c.figure}, sort_keys=True, default=str))
            for c in claims])


def _provenance(results: Results) -> str:
    """Specs, runs, time and hardware behind the report, from the runs table."""
    ids = list(results.runs)
    if not ids:
        return "No complete runs in the database yet: run the specs in specs/repro/ first.\n"
    rows = results.conn.execute(sa.select(t.runs.c.spec_hash, t.runs.c.device, t.runs.c.train_seconds,
                                          t.runs.c.measure_seconds, t.runs.c.versions).where(t.runs.c.run_id.in_(ids))).all()
    # A spec by its name and file name (not its full path, which differs between machines).
    specs = {h: f"{name} ({Path(path or '?').name})" for h, name, path in
             results.conn.execute(sa.select(t.specs.c.spec_hash, t.specs.c.name, t.specs.c.path)).all()}
    per_spec: dict[str, list] = {}
    for spec_hash, device, train_s, measure_s, versions in rows:
        per_spec.setdefault(specs.get(spec_hash, "?"), []).append((train_s or 0) + (measure_s or 0))
    devices = sorted({r[1] for r in rows if r[1]})
    versions = sorted({r[4] for r in rows if r[4]})
    # A run shared by several specs (same configuration) counts once, for the spec that last wrote it.
    lines = ["| spec | runs | train + measure time (min) |", "|---|---|---|"]
    lines += [f"| `{s}` | {len(v)} | {sum(v) / 60:.1f} |" for s, v in sorted(per_spec.items())]
    return ("\n".join(lines) + f"\n\nHardware: {', '.join(devices)}.  \nVersions: {'; '.join(versions)}.\n")


def render(engine: Engine, specs: list[str] | None = None, figures: Path | None = None,
           figures_link: str = "figures") -> tuple[str, list[ClaimResult]]:
    """The report's Markdown, and the claims it evaluated (their figures written to `figures`)."""
    from benchsuite.report.figures import claim_figure

    results = Results(engine, specs)
    try:
        claims = evaluate_claims(results)
        provenance = _provenance(results)
    finally:
        results.close()
    out = ["# Reproducing Nguyen, Raghu & Kornblith (2021) with benchsuite", "",
           "Generated by `bench claims --write docs/REPRODUCTION.md` from the results database after running every",
           "spec in `specs/repro/`. Each verdict comes from a query over stored results; the thresholds are documented",
           "in `benchsuite/report/claims.py`. Do not edit by hand: rerun the specs and the report.", "",
           "## Summary", "", "| claim | verdict | statistic | ± | what the statistic is |", "|---|---|---|---|---|"]
    out += [f"| {c.claim} {c.title} | **{c.verdict}** | {_fmt(c.statistic)} | {_fmt(c.uncertainty)} | {c.meaning} |"
            for c in claims]
    out += ["", "## Runs", "", provenance]
    for c in claims:
        out += [f"## {c.claim}: {c.title}", "", f"**Verdict: {c.verdict}.** Statistic: {_fmt(c.statistic)} "
                f"± {_fmt(c.uncertainty)} ({c.meaning}).", ""]
        if c.note:
            out += [c.note + ".", ""]
        out += ["Query:", "", "```sql", QUERIES[c.claim], "```", "", "Measured:", "", _table(c.columns, c.rows)]
        if figures is not None and claim_figure(c, figures / f"{c.claim}.svg"):
            out += [f"![{c.claim}]({figures_link}/{c.claim}.svg)", ""]
        out += [f"Differences from the paper's setting: {DIFFERENCES[c.claim]}", ""]
    return "\n".join(out).rstrip() + "\n", claims
