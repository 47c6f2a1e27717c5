"""Family analyses through `bench run`: cross-seed, cross-architecture and across-training CKA, blocks."""

import numpy as np

from conftest import TINY_SPEC, rows

SPEC = TINY_SPEC.replace("depth: [8]", "depth: [8, 14]").replace("seeds: [0]", "seeds: [0, 1]").replace(
    "epochs: 2", "epochs: 3").replace(
    "[cka, pcs]", "[cka, pcs, blocks, {kind: cross_cka, across: seeds}, {kind: cross_cka, across: architectures},"
                  " {kind: training_cka, epochs: [1]}]")


def test_cross_model_analyses_are_stored_with_both_run_ids(workdir, cli):
    (workdir / "f.yaml").write_text(SPEC)
    result = cli("run", "f.yaml")
    assert result.exit_code == 0, result.output
    db = workdir / "bench.duckdb"
    runs = dict(rows(db, "SELECT run_id, name || ' ' || seed FROM runs"))
    kinds = dict(rows(db, "SELECT a.kind || ' ' || json_extract_string(a.options, '$.across'), count(*) FROM cka "
                          "JOIN analyses a USING (analysis_id) WHERE a.kind = 'cross_cka' GROUP BY ALL"))
    # seeds: two architectures, each 2 runs -> 2 ordered pairs of (4x4) and (7x7); architectures: 2 seeds x 2 x (4x7)
    assert kinds == {"cross_cka seeds": 2 * 16 + 2 * 49, "cross_cka architectures": 2 * 2 * 28}
    cross = rows(db, "SELECT run_a, layer_a, run_b, layer_b, value FROM cka JOIN analyses a USING (analysis_id) "
                     "WHERE a.kind = 'cross_cka'")
    cells = {(a, i, b, j): v for a, i, b, j, v in cross}
    for (a, i, b, j), v in cells.items():
        assert a != b and runs[a] != runs[b]
        assert cells[b, j, a, i] == v and 0 <= v <= 1 + 1e-9
    # Across training: epoch 1 vs the final epoch 3, each run against itself.
    training = rows(db, "SELECT DISTINCT run_a = run_b, epoch_a, epoch_b FROM cka JOIN analyses a USING (analysis_id) "
                        "WHERE a.kind = 'training_cka' ORDER BY ALL")
    assert training == [(True, 1, 3), (True, 3, 1)]
    assert rows(db, "SELECT count(*) FROM analyses WHERE status != 'complete'") == [(0,)]
    # Running again computes nothing new.
    again = cli("run", "f.yaml")
    assert "0 of 4 runs to do" in again.stderr and "cross_cka" not in again.stderr


def test_narrow_shallow_model_has_no_block(workdir, cli):
    spec = TINY_SPEC.replace("train_size: 300", "train_size: null").replace("epochs: 2", "epochs: 4").replace(
        "[cka, pcs]", "[cka, pcs, blocks]")
    (workdir / "s.yaml").write_text(spec)
    assert cli("run", "s.yaml").exit_code == 0
    db = workdir / "bench.duckdb"
    assert rows(db, "SELECT score, num_blocks FROM block_scores") == [(0.0, 0)]
    pc1 = np.array(rows(db, "SELECT pc1_fraction FROM pcs ORDER BY layer"))
    assert pc1.max() < 0.5  # the detector's PC1 gate is what this model fails, as the paper expects
