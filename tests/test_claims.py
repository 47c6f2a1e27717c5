"""Claims C1-C8 are verdicts of queries over stored results: a synthetic database where every claim
holds, and one where none does, give opposite verdicts; the report is deterministic."""

import json

import numpy as np
import pytest

from benchsuite.report.claims import NOT_ENOUGH, NOT_SUPPORTED, SUPPORTED, Results, evaluate_claims
from benchsuite.store.engine import open_store
from benchsuite.store.writer import AnalysisRows, RunRows, record_spec, write_run, write_analyses

LAYERS = 12
BLOCK = (4, 9)


def _run(depth, width, seed, train_examples=1000):
    name = f"cifar_resnet[depth={depth},width={width}]"
    rid = f"{depth}-{width}-{seed}-{train_examples}"
    return rid, dict(run_id=rid, name=name, family="cifar_resnet", params=json.dumps({"depth": depth, "width": width}),
                     dataset="digits", train_size=None, train_examples=train_examples, subset_seed=0, seed=seed,
                     config=json.dumps({"family": "cifar_resnet", "params": {"depth": depth, "width": width},
                                        "dataset": {"name": "digits", "train_size": train_examples}, "seed": seed}),
                     spec_hash="s", status="complete", epochs_done=1)


def make_db(path, holds: bool):
    """Runs of a depth sweep, a width sweep and a data-size sweep with stored analyses that support
    every claim when `holds`, and contradict it otherwise."""
    rng = np.random.default_rng(0)
    engine = open_store(str(path), create=True)
    record_spec(engine, "s", "synthetic", "specs/repro/synthetic.yaml", "name: synthetic")
    block_runs = []
    sweeps = [(d, 1, 1000) for d in (8, 20, 56)] + [(20, w, 1000) for w in (2, 4)] + [(56, 1, n) for n in (250, 500)]
    for depth, width, n in sweeps:
        level = {8: 0, 20: 1, 56: 2}[depth] + {1: 0, 2: 1, 4: 2}[width] + {1000: 0, 500: 1, 250: 2}[n]
        for seed in range(3):
            rid, row = _run(depth, width, seed, n)
            score = (0.2 * level + 0.01 * seed) if holds else (0.4 - 0.1 * level + 0.01 * seed)
            blocks = [BLOCK] if score > 0.15 else []
            analyses = [AnalysisRows(f"b-{rid}", "blocks", [rid], {}, rows={
                "block_scores": [dict(run_id=rid, score=score, num_blocks=len(blocks), largest_fraction=0.5 if blocks else 0)],
                "blocks": [dict(run_id=rid, block=0, start_layer=s, end_layer=e, size_fraction=0.5, mean_cka=0.95,
                                mean_pc1=0.8, survives_pc1_removal=not holds, score=score) for s, e in blocks]})]
            inside = np.zeros(LAYERS, bool)
            inside[BLOCK[0]:BLOCK[1] + 1] = bool(blocks)
            pc1 = np.where(inside, 0.8 if holds else 0.3, 0.2)
            before = np.where(np.outer(inside, inside), 0.95, 0.5)
            after = np.where(np.outer(inside, inside), 0.3 if holds else 0.9, 0.5)
            cka = [dict(run_a=rid, epoch_a=1, layer_a=i, run_b=rid, epoch_b=1, layer_b=j, pc_removed=bool(p),
                        value=float(1.0 if i == j else m[i, j]), estimator="x")
                   for p, m in ((0, before), (1, after)) for i in range(LAYERS) for j in range(LAYERS)]
            analyses.append(AnalysisRows(f"p-{rid}", "pcs", [rid], {}, rows={
                "pcs": [dict(run_id=rid, layer=i, pc1_fraction=float(v), lambda1=1.0, total_variance=1.0) for i, v in enumerate(pc1)],
                "cka": cka}))
            probe = np.cumsum(np.where(inside, 0.0 if holds else 0.05, 0.05 if holds else 0.0)) + 0.3
            analyses.append(AnalysisRows(f"q-{rid}", "probes", [rid], {}, rows={
                "probes": [dict(run_id=rid, layer=i, accuracy=float(a), train_accuracy=float(a)) for i, a in enumerate(probe)]}))
            drop = np.where(inside, 0.0 if holds else 0.2, 0.2 if holds else 0.0) + rng.uniform(0, 0.01, LAYERS)
            analyses.append(AnalysisRows(f"a-{rid}", "ablation", [rid], {}, rows={
                "ablations": [dict(run_id=rid, target=f"layer{i}", start_layer=i, end_layer=i, accuracy=0.9 - d,
                                   accuracy_drop=float(d)) for i, d in enumerate(drop[1:], start=1)]}))
            write_run(engine, RunRows(run=row, metrics=[dict(run_id=rid, name="eval_acc", epoch=1, value=0.9)],
                                      analyses=analyses))
            if blocks:
                block_runs.append((rid, depth, width, n))
    # Cross-seed CKA of the same layer: low inside the block when the claim holds.
    cross = []
    for depth, width, n in sweeps:
        ids = [rid for rid, d, w, k in block_runs if (d, w, k) == (depth, width, n)]
        for a in ids:
            for b in ids:
                if a != b:
                    cross += [dict(run_a=a, epoch_a=1, layer_a=i, run_b=b, epoch_b=1, layer_b=i, pc_removed=False,
                                   value=(0.4 if holds else 0.95) if BLOCK[0] <= i <= BLOCK[1] else 0.9, estimator="x")
                              for i in range(LAYERS)]
    classes = [dict(**{"class": k}, mean_a=0.9, mean_b=0.9 + (0.05 if holds and k in (3, 7) else 0.0), statistic=0.0,
                    p_value=0.001 if holds and k in (3, 7) else 0.5, q_value=0.005 if holds and k in (3, 7) else 0.6,
                    significant=holds and k in (3, 7)) for k in range(10)]
    write_analyses(engine, [AnalysisRows("x", "cross_cka", [r[0] for r in block_runs], {"across": "seeds"}, rows={"cka": cross}),
                            AnalysisRows("e", "errors", [], {"group_a": "*depth=56*", "group_b": "*width=4*"},
                                         rows={"error_classes": classes})])
    return engine


def claims_of(engine) -> dict:
    results = Results(engine)
    try:
        return {c.claim: c for c in evaluate_claims(results)}
    finally:
        results.close()


def test_verdicts_follow_the_stored_results(tmp_path):
    holds = claims_of(make_db(tmp_path / "holds.duckdb", True))
    fails = claims_of(make_db(tmp_path / "fails.duckdb", False))
    for claim in [f"C{i}" for i in range(1, 9)]:
        assert holds[claim].verdict == SUPPORTED, (claim, holds[claim])
        assert fails[claim].verdict in (NOT_SUPPORTED, NOT_ENOUGH), (claim, fails[claim])
    assert fails["C1"].verdict == NOT_SUPPORTED and fails["C6"].statistic == 0
    assert holds["C1"].statistic == pytest.approx(0.4) and holds["C6"].statistic == 2
    assert holds["C4"].statistic == pytest.approx(0.8)


def test_empty_database_has_not_enough_runs(tmp_path):
    engine = open_store(str(tmp_path / "empty.duckdb"), create=True)
    assert {c.verdict for c in claims_of(engine).values()} == {NOT_ENOUGH}


def test_report_is_deterministic_and_stored(tmp_path, cli):
    make_db(tmp_path / "r.duckdb", True).dispose()
    out = tmp_path / "docs" / "REPRODUCTION.md"
    for _ in range(2):
        result = cli("claims", "--db", tmp_path / "r.duckdb", "--write", out, "-f", "csv")
        assert result.exit_code == 0, result.output
        text = out.read_text()
        figures = {p.name: p.read_bytes() for p in (tmp_path / "docs" / "figures").iterdir()}
        if _ == 0:
            first, first_figures = text, figures
    assert text == first and figures == first_figures and len(figures) == 8
    assert "**Verdict: supported.**" in text and "![C1](figures/C1.svg)" in text
    verdicts = cli("query", "SELECT claim, verdict FROM claims ORDER BY claim", "--db", tmp_path / "r.duckdb", "-f", "csv")
    assert verdicts.stdout.splitlines()[1:] == [f"C{i},supported" for i in range(1, 9)]


def _sweep(engine, train_examples: int, scores: dict[int, float]):
    """Add a depth sweep (3 seeds a depth) trained on another data size, with the given block scores."""
    for depth, score in scores.items():
        for seed in range(3):
            rid, row = _run(depth, 1, seed, train_examples)
            write_run(engine, RunRows(run=row, analyses=[AnalysisRows(f"b-{rid}", "blocks", [rid], {}, rows={
                "block_scores": [dict(run_id=rid, score=score + 0.01 * seed, num_blocks=0, largest_fraction=0.0)]})]))


def test_a_sweep_without_blocks_neither_supports_nor_contradicts(tmp_path):
    engine = make_db(tmp_path / "h.duckdb", True)
    _sweep(engine, 700, {8: 0.0, 56: 0.0})
    assert claims_of(engine)["C1"].verdict == SUPPORTED
    _sweep(engine, 800, {8: 0.5, 56: 0.0})  # less block when deeper: contradicts
    assert claims_of(engine)["C1"].verdict == NOT_SUPPORTED
