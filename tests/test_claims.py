"""Claims C1-C8 are verdicts of pre-registered rules over stored results. Each test writes a database
through the real store, with the run and analysis ids the real specs give, in which a claim holds or
fails the way a trained (or untrained) model could make it hold or fail, and checks the verdict."""

import json

import numpy as np
import pytest

from benchsuite.report import rules as R
from benchsuite.report.claims import NOT_ENOUGH, NOT_SUPPORTED, SUPPORTED, Results, evaluate_claims
from benchsuite.runner.analyses import analysis_id, measure_id
from benchsuite.runner.jobs import Job, run_row
from benchsuite.spec import expand, parse_spec, run_id, run_name, spec_hash
from benchsuite.store.engine import open_store
from benchsuite.store.writer import AnalysisRows, RunRows, record_spec, set_run_status, write_analyses, write_run

LAYERS, BLOCK = 12, (4, 9)
EVAL = 200  # evaluation examples, 20 a class
ANALYSES = "[cka, pcs, blocks, probes, ablation, predictions, {kind: cross_cka, across: seeds}]"


def spec_text(name, grid, seeds=(0, 1, 2), train_size=300, analyses=ANALYSES):
    return (f"name: {name}\ndataset: {{name: digits, train_size: {train_size}, eval_size: {EVAL}}}\n"
            f"family: {{name: cifar_resnet, grid: {grid}}}\nseeds: {list(seeds)}\n"
            f"train: {{epochs: 2, batch_size: 64, lr: 0.05}}\nmeasure: {{batch_size: 50}}\nanalyses: {analyses}\n")


DEPTH = spec_text("depth", "{depth: [8, 14, 20], width: [1]}")
WIDTH = spec_text("width", "{depth: [8], width: [1, 2, 4]}")
DATASIZE = spec_text("datasize", "{depth: [8], width: [1]}", train_size="[100, 200, 400]")
WIDE_DEEP = spec_text("wide_deep", "[{depth: [8], width: [4]}, {depth: [20], width: [1]}]", seeds=range(5))


def level(config) -> int:
    """0, 1, 2 from the shallow/narrow/large-data end to the end where the paper expects more block."""
    p, n = config.params, config.dataset.train_size
    return {8: 0, 14: 1, 20: 2}[p["depth"]] + {1: 0, 2: 1, 4: 2}[p["width"]] + {300: 0, 400: 0, 200: 1, 100: 2}[n]


def holds(config) -> dict:
    """A world where every claim holds: block grows along each sweep, PC1 dominates inside it and its removal
    dissolves it, seeds differ inside it, probes are flat across it and deleting inside it is cheap."""
    return dict(acc=0.9, score=0.2 * level(config) + 0.01 * config.seed, pc1_in=0.8, after_in=0.3, cross_in=0.4,
                probe_in=0.0, drop_in=0.0, weak_classes=(3, 7) if config.params["depth"] == 20 else ())


def write_world(path, specs: list[str], world) -> object:
    """A database holding every run of `specs`, with the rows `world(config)` describes."""
    engine = open_store(str(path), create=True)
    labels = np.arange(EVAL) % 10
    for text in specs:
        spec = parse_spec(text, "test")
        record_spec(engine, spec_hash(text), spec.name, f"specs/{spec.name}.yaml", text)
        measure = spec.measure.analysis_key()
        mid = measure_id(spec.measure.identity())
        done = []
        for config in expand(spec):
            rid, w = run_id(config), world(config)
            job = Job(rid, run_name(config), config, spec.measure, [], spec_hash(text), "")
            if w.get("failed"):
                set_run_status(engine, run_row(job), "failed", w["failed"])
                continue
            done.append((rid, config, w))

            def aid(kind):
                return analysis_id(kind, {}, [rid], measure)

            blocks = [BLOCK] if w["score"] > 0.15 else []
            inside = np.zeros(LAYERS, bool)
            inside[BLOCK[0]:BLOCK[1] + 1] = bool(blocks)
            pc1 = np.where(inside, w["pc1_in"], w.get("pc1_out", 0.2))
            before = np.where(np.outer(inside, inside), 0.95, 0.5)
            after = np.where(np.outer(inside, inside), w["after_in"], 0.5)

            def heat(m, removed):
                return [dict(run_a=rid, epoch_a=2, layer_a=i, run_b=rid, epoch_b=2, layer_b=j, pc_removed=removed,
                             value=float(1.0 if i == j else m[i, j]), estimator="x") for i in range(LAYERS) for j in range(LAYERS)]

            probe = np.cumsum(np.where(inside, w["probe_in"], 0.05)) + 0.3
            drop = np.where(inside, w["drop_in"], 0.2) + np.random.default_rng(config.seed).uniform(0, 0.01, LAYERS)
            rng = np.random.default_rng(1000 + config.seed)
            p_right = np.where(np.isin(labels, w["weak_classes"]), w["acc"] - 0.3, w["acc"])
            right = rng.random(EVAL) < p_right
            analyses = [
                AnalysisRows(aid("cka"), "cka", [rid], {}, rows={"cka": heat(before, False)}),
                AnalysisRows(aid("pcs"), "pcs", [rid], {}, rows={
                    "pcs": [dict(run_id=rid, layer=i, pc1_fraction=float(v), lambda1=1.0, total_variance=1.0) for i, v in enumerate(pc1)],
                    "cka": heat(after, True)}),
                AnalysisRows(aid("blocks"), "blocks", [rid], {}, rows={
                    "block_scores": [dict(run_id=rid, score=w["score"], num_blocks=len(blocks), largest_fraction=0.5 if blocks else 0)],
                    "blocks": [dict(run_id=rid, block=0, start_layer=s, end_layer=e, size_fraction=0.5, mean_cka=0.95,
                                    mean_pc1=float(w["pc1_in"]), survives_pc1_removal=w["after_in"] >= 0.75, score=w["score"])
                               for s, e in blocks]}),
                AnalysisRows(aid("probes"), "probes", [rid], {}, rows={
                    "probes": [dict(run_id=rid, layer=i, accuracy=float(a), train_accuracy=float(a)) for i, a in enumerate(probe)]}),
                AnalysisRows(aid("ablation"), "ablation", [rid], {}, rows={
                    "ablations": [dict(run_id=rid, target=f"layer{i}", start_layer=i, end_layer=i, accuracy=0.9 - d,
                                       accuracy_drop=float(d)) for i, d in enumerate(drop[1:], start=1)]}),
                AnalysisRows(aid("predictions"), "predictions", [rid], {}, rows={
                    "predictions": [dict(run_id=rid, example=i, label=int(y), prediction=int(y if ok else (y + 1) % 10),
                                         confidence=0.9) for i, (y, ok) in enumerate(zip(labels, right))]}),
            ]
            for a in analyses:
                a.measure_id = mid
            write_run(engine, RunRows(run=run_row(job, status="complete", epochs_done=2, train_examples=config.dataset.train_size),
                                      metrics=[dict(run_id=rid, name="eval_acc", epoch=2, value=w["acc"])], analyses=analyses,
                                      measure_id=mid))
        # Cross-seed CKA of the same layer between the seeds of each setting.
        cross = []
        for a, ca, wa in done:
            for b, cb, _ in done:
                if a != b and (ca.params, ca.dataset) == (cb.params, cb.dataset):
                    cross += [dict(run_a=a, epoch_a=2, layer_a=i, run_b=b, epoch_b=2, layer_b=i, pc_removed=False,
                                   value=wa["cross_in"] if BLOCK[0] <= i <= BLOCK[1] else 0.9, estimator="x")
                              for i in range(LAYERS)]
        ids = [r for r, _, _ in done]
        write_analyses(engine, [AnalysisRows(analysis_id("cross_cka", {"across": "seeds"}, ids, measure), "cross_cka", ids,
                                             {"across": "seeds"}, rows={"cka": cross}, measure_id=mid)])
    return engine


def claims_of(engine, specs=None) -> dict:
    results = Results(engine, specs)
    try:
        return {c.claim: c for c in evaluate_claims(results)}
    finally:
        results.close()


ALL = [DEPTH, WIDTH, DATASIZE, WIDE_DEEP]


def test_every_claim_holds_in_a_world_where_it_holds(tmp_path):
    claims = claims_of(write_world(tmp_path / "h.duckdb", ALL, holds))
    for c in claims.values():
        assert c.verdict == SUPPORTED, (c.claim, c.verdict, c.note, c.rows)
        assert c.runs, c.claim
    assert claims["C1"].statistic == pytest.approx(0.4) and claims["C6"].statistic == 2
    assert claims["C4"].statistic == pytest.approx(0.6) and claims["C6"].uncertainty is None


@pytest.fixture(scope="module")
def supported_alone(tmp_path_factory):
    """The claims of the world where they hold, per set of specs (built once)."""
    cache = {}

    def get(specs):
        key = tuple(specs)
        if key not in cache:
            cache[key] = claims_of(write_world(tmp_path_factory.mktemp("holds") / "h.duckdb", specs, holds))
        return cache[key]

    return get


@pytest.mark.parametrize("claim,change", [
    # The deepest/widest/smallest-data models form blocks only because they did not train.
    ("C1", lambda c, w: dict(w, acc=0.3) if c.params["depth"] == 20 else dict(w, score=0.0)),
    ("C2", lambda c, w: dict(w, acc=0.75) if c.params["width"] == 4 else dict(w, score=0.0)),
    ("C3", lambda c, w: dict(w, failed="diverged at epoch 1: training loss nan") if c.dataset.train_size == 100 else w),
    # Block grows the wrong way: less block when deeper.
    ("C1", lambda c, w: dict(w, score=0.5 - 0.2 * c.params["depth"] / 20)),
    # PC1 is as high outside the block as inside (a detector input, but no contrast), or removing it leaves the block.
    ("C4", lambda c, w: dict(w, pc1_in=0.6, pc1_out=0.6)),
    ("C4", lambda c, w: dict(w, pc1_in=0.6, after_in=0.9)),
    # Seeds are as similar inside blocks as outside.
    ("C5", lambda c, w: dict(w, cross_in=0.9)),
    # Wide and deep make the same errors per class.
    ("C6", lambda c, w: dict(w, weak_classes=())),
    # Probes keep rising across the block; deleting inside the block hurts as much.
    ("C7", lambda c, w: dict(w, probe_in=0.05)),
    ("C8", lambda c, w: dict(w, drop_in=0.25)),
])
def test_each_claim_fails_when_the_models_contradict_it(tmp_path, claim, change, supported_alone):
    specs = {"C2": [WIDTH], "C3": [DATASIZE], "C6": [WIDE_DEEP]}.get(claim, [DEPTH])
    assert supported_alone(specs)[claim].verdict == SUPPORTED  # the control: only `change` makes it fail
    claims = claims_of(write_world(tmp_path / "f.duckdb", specs, lambda c: change(c, holds(c))))
    assert claims[claim].verdict in (NOT_SUPPORTED, NOT_ENOUGH), (claim, claims[claim])


def test_blocks_only_in_untrained_runs_are_not_evidence(tmp_path):
    """ResNet-20 alone has blocks, but at chance: C1 has a level without trained seeds, and every run at
    depth 20 is listed as excluded with its accuracy."""
    world = lambda c: dict(holds(c), acc=0.12, score=0.6) if c.params["depth"] == 20 else dict(holds(c), score=0.0)
    results = Results(write_world(tmp_path / "c.duckdb", [DEPTH], world))
    try:
        c1 = evaluate_claims(results)[0]
        excluded = results.excluded()
    finally:
        results.close()
    assert c1.verdict == NOT_ENOUGH and "not enough runs (depth 20" in c1.note
    assert len(excluded) == 3 and all("near chance" in r[4] and r[1] == "cifar_resnet[depth=20,width=1]" for r in excluded)


def test_trained_rule_is_relative_to_the_best_architecture(tmp_path):
    # 0.80 against a best of 0.90 is more than TRAINED_MARGIN below: excluded; 0.88 is within it.
    for acc, kept in ((0.80, False), (0.88, True)):
        world = lambda c: dict(holds(c), acc=acc) if c.params["depth"] == 20 else holds(c)
        results = Results(write_world(tmp_path / f"m{acc}.duckdb", [DEPTH], world))
        try:
            deep = [e for s in results.specs for e in s.runs if e.run.params["depth"] == 20]
            assert all(e.trained == kept for e in deep), [e.excluded for e in deep]
        finally:
            results.close()
    assert R.TRAINED_MARGIN == 0.05


def test_c6_ignores_a_lenient_alpha_and_needs_matched_accuracy(tmp_path):
    """A stored `errors` analysis at alpha 0.99 flags every class; C6 recomputes at FDR 0.05 from predictions."""
    same = lambda c: dict(holds(c), weak_classes=())
    engine = write_world(tmp_path / "a.duckdb", [WIDE_DEEP], same)
    classes = [{"class": k, "mean_a": 0.9, "mean_b": 0.9, "statistic": 0.0, "p_value": 0.5, "q_value": 0.6,
                "significant": True} for k in range(10)]
    write_analyses(engine, [AnalysisRows("lenient", "errors", [], {"alpha": 0.99}, rows={"error_classes": classes})])
    c6 = claims_of(engine)["C6"]
    assert c6.verdict == NOT_SUPPORTED and c6.statistic == 0 and c6.uncertainty is None
    assert c6.rows[0][1:3] == ["cifar_resnet[depth=8,width=4]", "cifar_resnet[depth=20,width=1]"]
    # Deep models 5 points less accurate: not matched, so no comparison.
    unmatched = lambda c: dict(holds(c), acc=0.85) if c.params["depth"] == 20 else holds(c)
    c6 = claims_of(write_world(tmp_path / "u.duckdb", [WIDE_DEEP], unmatched))["C6"]
    assert c6.verdict == NOT_ENOUGH and "not matched" in c6.note


def test_two_data_sizes_at_one_seed_are_never_seeds_of_each_other(tmp_path):
    engine = write_world(tmp_path / "s.duckdb", [spec_text("sizes", "{depth: [20], width: [1]}", seeds=[0],
                                                          train_size="[200, 400]")], holds)
    # write_world pairs only runs of one setting; add the pair a name-based grouping would have made.
    results = Results(engine)
    try:
        ids = [e.run.run_id for e in results.specs[0].runs]
    finally:
        results.close()
    assert len(ids) == 2
    write_analyses(engine, [AnalysisRows("x", "cross_cka", ids, {"across": "seeds"}, rows={"cka": [
        dict(run_a=min(ids), epoch_a=2, layer_a=i, run_b=max(ids), epoch_b=2, layer_b=i, pc_removed=False, value=0.5,
             estimator="x") for i in range(LAYERS)]}, measure_id=results.specs[0].measure_id)])
    c5 = claims_of(engine)["C5"]
    assert c5.verdict == NOT_ENOUGH and c5.rows == []


def test_spec_sees_every_run_it_declares_wherever_it_was_stored(tmp_path):
    # `depth` stores ResNet-8/14/20; `shared` declares ResNet-8 and ResNet-20 again, and a new depth 26.
    shared = spec_text("shared", "{depth: [8, 20, 26], width: [1]}")
    engine = write_world(tmp_path / "x.duckdb", [DEPTH], holds)
    record_spec(engine, spec_hash(shared), "shared", "specs/shared.yaml", shared)
    results = Results(engine, ["shared"])
    try:
        assert [s.name for s in results.specs] == ["shared"]
        depths = sorted({e.run.params["depth"] for e in results.specs[0].runs})
        missing = {(n, why) for _, n, _, _, why in results.excluded()}
    finally:
        results.close()
    assert depths == [8, 20]
    assert missing == {("cifar_resnet[depth=26,width=1]", "not in the database")}


def test_unknown_spec_is_one_line(tmp_path, cli):
    write_world(tmp_path / "u.duckdb", [DEPTH], holds).dispose()
    result = cli("claims", "--db", tmp_path / "u.duckdb", "--spec", "nope")
    assert result.exit_code == 2 and "--spec nope: no such spec in the database; stored specs: depth" in result.output


def test_report_is_deterministic_and_stored(tmp_path, cli):
    write_world(tmp_path / "r.duckdb", ALL, holds).dispose()
    out = tmp_path / "docs" / "REPRODUCTION.md"
    for _ in range(2):
        result = cli("claims", "--db", tmp_path / "r.duckdb", "--write", out, "-f", "csv")
        assert result.exit_code == 0, result.output
        text = out.read_text()
        figures = {p.name: p.read_bytes() for p in (tmp_path / "docs" / "figures").iterdir()}
        if _ == 0:
            first, first_figures = text, figures
    assert text == first and figures == first_figures and len(figures) == 8
    assert f"Rules version **{R.RULES_VERSION}**" in text and "Shared with:" in text and "Runs used (" in text
    assert "![C1](figures/C1.svg)" in text and "Setting: the paper used" in text
    verdicts = cli("query", "SELECT claim, verdict FROM claims ORDER BY claim", "--db", tmp_path / "r.duckdb", "-f", "csv")
    assert verdicts.stdout.splitlines()[1:] == [f"C{i},supported" for i in range(1, 9)]
    evidence = json.loads(cli("query", "SELECT evidence FROM claims WHERE claim = 'C1'", "--db", tmp_path / "r.duckdb",
                              "-f", "csv").stdout.splitlines()[1].strip('"').replace('""', '"'))
    assert len(evidence["runs"]) == 9  # every trained seed of the depth sweep at width 1
