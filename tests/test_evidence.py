"""What counts as evidence, end to end through `bench run`: a diverged run fails and leaves no
measurements; two probe settings of one run never mix; seeds are paired only within one setting."""

import re

import numpy as np

from benchsuite.report.claims import Results
from benchsuite.store.engine import open_store
from conftest import make_spec, rows

ANALYSES = "[cka, pcs, blocks, {kind: cross_cka, across: seeds}]"


def test_a_diverged_run_fails_with_its_epoch_and_leaves_no_measurements(workdir, cli):
    (workdir / "div.yaml").write_text(make_spec("div", depths="[8, 14]", seeds="[0, 1]", analyses=ANALYSES)
                                      .replace("lr: 0.05", "lr: 1.0e6"))
    result = cli("run", "div.yaml")
    assert result.exit_code == 1
    # Every run tried, none stops the sweep. Which loss turns NaN first depends on the depth: a shallow model's
    # BatchNorm keeps the training loss finite while its running statistics make the evaluation loss NaN.
    diverged = re.compile(r"diverged at epoch 1: (training|evaluation) loss nan")
    assert len(diverged.findall(result.stderr)) == 4, result.stderr
    db = workdir / "bench.duckdb"
    stored = rows(db, "SELECT status, error FROM runs")
    assert len(stored) == 4 and all(s == "failed" and diverged.fullmatch(e) for s, e in stored), stored
    for table in ("cka", "pcs", "blocks", "block_scores", "layers", "metrics"):
        assert rows(db, f"SELECT count(*) FROM {table}") == [(0,)], table
    # The same database goes on: a good spec completes, and claims list the diverged runs as excluded.
    (workdir / "ok.yaml").write_text(make_spec("ok", seeds="[0, 1]", analyses=ANALYSES))
    assert cli("run", "ok.yaml").exit_code == 0
    assert rows(db, "SELECT count(*) FROM runs WHERE status = 'complete'") == [(2,)]
    results = Results(open_store(str(db)))
    try:
        reasons = [why for spec, _, _, _, why in results.excluded() if spec == "div"]
    finally:
        results.close()
    assert sorted(reasons) == sorted(f"failed: {e}" for _, e in stored)


def _heatmaps(db, spec: str) -> dict[str, np.ndarray]:
    results = Results(open_store(str(db)), [spec])
    try:
        return {e.run.run_id: results.heatmap(e, False) for s in results.specs for e in s.runs}
    finally:
        results.close()


def test_two_probe_settings_of_one_run_never_mix(workdir, cli):
    blocks = make_spec("blocks", analyses=ANALYSES)
    convs = make_spec("convs", analyses=ANALYSES).replace("measure: {batch_size: 50}",
                                                          "measure: {batch_size: 50, probes: ['*conv*']}")
    (workdir / "blocks.yaml").write_text(blocks)
    (workdir / "convs.yaml").write_text(convs)
    for spec, db in (("blocks", "both"), ("convs", "both"), ("blocks", "blocks"), ("convs", "convs")):
        result = cli("run", f"{spec}.yaml", "--db", f"{db}.duckdb", "--artifacts", f"art_{db}")
        assert result.exit_code == 0, result.output
    # One run (same id in both specs), two settings: 4 block outputs, and the convolutions.
    assert rows("both.duckdb", "SELECT count(DISTINCT run_id) FROM runs") == [(1,)]
    per_setting = rows("both.duckdb", "SELECT measure_id, count(*) FROM layers GROUP BY measure_id ORDER BY 2")
    assert [n for _, n in per_setting][0] == 4 and len(per_setting) == 2 and per_setting[1][1] > 4
    for spec in ("blocks", "convs"):
        together, alone = _heatmaps("both.duckdb", spec), _heatmaps(f"{spec}.duckdb", spec)
        assert together.keys() == alone.keys()
        for rid in together:
            np.testing.assert_array_equal(together[rid], alone[rid])
    assert next(iter(_heatmaps("both.duckdb", "blocks").values())).shape == (4, 4)
    # The probe view reads each setting's own layer names.
    assert rows("both.duckdb", "SELECT count(*) FROM layers l JOIN analyses a USING (measure_id) WHERE a.kind = 'cka'") \
        == [(4 + per_setting[1][1],)]


def test_two_training_set_sizes_at_one_seed_are_not_seeds_of_each_other(workdir, cli):
    (workdir / "sizes.yaml").write_text(make_spec("sizes", train_size="[100, 200]", seeds="[0, 1]",
                                                  analyses="[{kind: cross_cka, across: seeds}]"))
    assert cli("run", "sizes.yaml").exit_code == 0
    db = workdir / "bench.duckdb"
    pairs = rows(db, "SELECT DISTINCT ra.train_size, rb.train_size, ra.seed, rb.seed FROM cka c "
                     "JOIN runs ra ON ra.run_id = c.run_a JOIN runs rb ON rb.run_id = c.run_b ORDER BY ALL")
    assert pairs == [(100, 100, 0, 1), (100, 100, 1, 0), (200, 200, 0, 1), (200, 200, 1, 0)]
