"""End to end through `bench run`: the database, skipping, resuming, read-only queries."""

import os
import signal
import subprocess
import sys
import time

import numpy as np

from conftest import TINY_SPEC, eval_features, rows


def test_run_stores_rows_and_rerun_trains_nothing(tiny_spec, cli):
    result = cli("run", tiny_spec)
    assert result.exit_code == 0, result.output
    db = tiny_spec.parent / "bench.duckdb"
    (status, epochs), = rows(db, "SELECT status, epochs_done FROM runs")
    assert (status, epochs) == ("complete", 2)
    layers = rows(db, "SELECT layer, name, stage FROM layers ORDER BY layer")
    assert [l[1] for l in layers] == ["stem", "stage1.block0", "stage2.block0", "stage3.block0"]
    heat = np.zeros((4, 4))
    for a, b, v in rows(db, "SELECT layer_a, layer_b, value FROM cka WHERE NOT pc_removed"):
        heat[a, b] = v
    assert np.allclose(np.diag(heat), 1) and np.array_equal(heat, heat.T) and (heat[~np.eye(4, dtype=bool)] < 1).all()
    pcs = [r[0] for r in rows(db, "SELECT pc1_fraction FROM pcs ORDER BY layer")]
    assert len(pcs) == 4 and all(0 < p < 1 for p in pcs)
    assert rows(db, "SELECT count(*) FROM metrics WHERE name = 'eval_acc'") == [(2,)]

    before = rows(db, "SELECT updated_at FROM runs")
    again = cli("run", tiny_spec)
    assert again.exit_code == 0 and "0 of 1 runs to do" in again.stderr
    assert rows(db, "SELECT updated_at FROM runs") == before



def test_new_analysis_on_a_complete_run_trains_nothing(tiny_spec, cli):
    tiny_spec.write_text(TINY_SPEC.replace("[cka, pcs]", "[cka]"))
    assert cli("run", tiny_spec).exit_code == 0
    db = tiny_spec.parent / "bench.duckdb"
    trained = rows(db, "SELECT train_seconds, epochs_done FROM runs")
    metrics = rows(db, "SELECT * FROM metrics ORDER BY ALL")
    assert rows(db, "SELECT count(*) FROM pcs") == [(0,)]
    tiny_spec.write_text(TINY_SPEC)
    result = cli("run", tiny_spec)
    assert "1 of 1 runs to do" in result.stderr and "resumed from epoch 2" in result.stderr
    assert rows(db, "SELECT count(*) FROM pcs") == [(4,)]
    assert rows(db, "SELECT train_seconds, epochs_done FROM runs") == trained
    assert rows(db, "SELECT * FROM metrics ORDER BY ALL") == metrics


def test_measured_cka_matches_reference_on_the_trained_model(tiny_spec, cli):
    """The stored heatmap equals the float64 reference computed from the model's own activations."""
    from benchsuite.runner import make_plan
    from benchsuite.spec import load_spec
    from reference import minibatch_cka

    assert cli("run", tiny_spec).exit_code == 0
    db = tiny_spec.parent / "bench.duckdb"
    job = make_plan(load_spec(tiny_spec), "x", None, artifacts=str(tiny_spec.parent / "bench_artifacts")).jobs[0]
    batches = eval_features(job)  # 120 examples: batches of 50, 50 and 20
    stored = {(a, b): v for a, b, v in rows(db, "SELECT layer_a, layer_b, value FROM cka WHERE NOT pc_removed")}
    for i in range(len(batches[0])):
        for j in range(len(batches[0])):
            ref = minibatch_cka([b[i] for b in batches], [b[j] for b in batches])
            assert abs(stored[i, j] - ref) < 1e-6


def test_measure_examples_measure_a_balanced_subset_and_accuracy_reads_every_example(workdir, cli):
    """measure.examples: CKA, PCs and probes read a class-balanced subset of the evaluation set; accuracy and
    predictions read all of it; a spec without the field keeps its measurement id."""
    from benchsuite.runner import make_plan
    from benchsuite.spec import load_spec
    from benchsuite.train import prepare_data
    from conftest import make_spec
    from reference import minibatch_cka, pc1_fraction

    spec = workdir / "sub.yaml"
    spec.write_text(make_spec("sub", eval_size=200, analyses="[cka, pcs, predictions]",
                              measure="{batch_size: 50, examples: 120}"))
    assert cli("run", spec).exit_code == 0
    db = workdir / "bench.duckdb"
    job = make_plan(load_spec(spec), "x", None, artifacts=str(workdir / "bench_artifacts")).jobs[0]
    data = prepare_data(job.config.dataset)
    subset = data.eval_loader("cpu", 120)
    counts = np.bincount(subset.y.numpy(), minlength=10)
    assert len(subset.y) == 120 and counts.max() - counts.min() <= 1  # class-balanced
    assert rows(db, "SELECT count(*) FROM predictions") == [(200,)]
    (acc,), = rows(db, "SELECT value FROM metrics WHERE name = 'eval_acc' AND epoch = 2")
    correct = rows(db, "SELECT avg(CASE WHEN label = prediction THEN 1 ELSE 0 END) FROM predictions")[0][0]
    assert abs(acc - correct) < 1e-9  # accuracy over all 200
    batches = eval_features(job, examples=120)  # batches of 50, 50 and 20
    assert sum(len(b[0]) for b in batches) == 120
    stored = {(a, b): v for a, b, v in rows(db, "SELECT layer_a, layer_b, value FROM cka WHERE NOT pc_removed")}
    for i in range(len(batches[0])):
        for j in range(len(batches[0])):
            assert abs(stored[i, j] - minibatch_cka([b[i] for b in batches], [b[j] for b in batches])) < 1e-6
    pcs = [v for v, in rows(db, "SELECT pc1_fraction FROM pcs ORDER BY layer")]
    for i, stored_pc1 in enumerate(pcs):
        feats = np.concatenate([b[i].reshape(len(b[i]), -1) for b in batches]).astype(np.float64)
        assert abs(stored_pc1 - pc1_fraction(feats)) < 1e-3
    without = load_spec(spec).measure.model_copy(update={"examples": None})
    assert "examples" not in without.identity() and load_spec(spec).measure.identity()["examples"] == 120


def test_several_specs_run_in_one_command_and_are_all_checked_first(workdir, cli):
    from conftest import make_spec

    (workdir / "a.yaml").write_text(make_spec("a", epochs=1))
    (workdir / "b.yaml").write_text(make_spec("b", epochs=1, seeds="[1]"))
    (workdir / "bad.yaml").write_text(make_spec("bad").replace("epochs: 2", "epochs: zero"))
    bad = cli("run", "a.yaml", "bad.yaml")
    assert bad.exit_code == 2 and "bad.yaml" in bad.stderr and not (workdir / "bench.duckdb").exists()
    result = cli("run", "a.yaml", "b.yaml")
    assert result.exit_code == 0, result.output
    assert rows(workdir / "bench.duckdb", "SELECT s.name, r.seed FROM runs r JOIN specs s USING (spec_hash) ORDER BY 1") == \
        [("a", 0), ("b", 1)]


def _bench(*args, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "benchsuite", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def test_kill_mid_run_then_resume_gives_the_same_rows(workdir):
    spec = TINY_SPEC.replace("epochs: 2", "epochs: 6").replace("depth: [8]", "depth: [14]")
    (workdir / "s.yaml").write_text(spec)
    ckpt_root = workdir / "killed_artifacts"
    proc = _bench("run", "s.yaml", "--db", "killed.duckdb", "--artifacts", str(ckpt_root), cwd=workdir)
    deadline = time.time() + 120
    while not list(ckpt_root.glob("runs/*/last.pt")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)  # a crash: no cleanup handlers run
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert rows(workdir / "killed.duckdb", "SELECT status FROM runs") == [("running",)]

    resumed = _bench("run", "s.yaml", "--db", "killed.duckdb", "--artifacts", str(ckpt_root), cwd=workdir)
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    assert "resumed from epoch" in out

    whole = _bench("run", "s.yaml", "--db", "whole.duckdb", "--artifacts", str(workdir / "whole_artifacts"), cwd=workdir)
    out, _ = whole.communicate(timeout=300)
    assert whole.returncode == 0, out
    for sql in ["SELECT run_id, name, epoch, value FROM metrics ORDER BY ALL",
                "SELECT run_a, layer_a, run_b, layer_b, value FROM cka ORDER BY ALL",
                "SELECT run_id, layer, pc1_fraction FROM pcs ORDER BY ALL",
                "SELECT run_id, status, epochs_done FROM runs"]:
        a, b = rows(workdir / "killed.duckdb", sql), rows(workdir / "whole.duckdb", sql)
        assert len(a) == len(b) > 0
        for ra, rb in zip(a, b):
            assert ra[:-1] == rb[:-1]
            assert ra[-1] == rb[-1] or abs(ra[-1] - rb[-1]) < 1e-12


def test_query_is_read_only(tiny_spec, cli):
    assert cli("run", tiny_spec).exit_code == 0
    db = tiny_spec.parent / "bench.duckdb"
    ok = cli("query", "SELECT count(*) AS n FROM cka WHERE NOT pc_removed", "--format", "csv")
    assert ok.exit_code == 0 and ok.stdout.splitlines() == ["n", "16"]
    before = {t: rows(db, f"SELECT count(*) FROM {t}") for t in ("runs", "cka", "metrics")}
    for sql in ["DELETE FROM runs", "DROP TABLE cka", "INSERT INTO metrics VALUES ('x', 'y', 1, 2.0)",
                "UPDATE runs SET status = 'x'", "ATTACH 'other.duckdb' AS o", "COPY runs TO 'out.csv'",
                "COPY (SELECT 1) TO 'out.csv'", "SELECT 1; DROP TABLE runs", "CREATE TABLE t (a INT)"]:
        result = cli("query", sql)
        assert result.exit_code == 2, sql
        assert "bench query only reads" in result.stderr or "exactly one statement" in result.stderr
    assert not (tiny_spec.parent / "out.csv").exists() and not (tiny_spec.parent / "other.duckdb").exists()
    assert {t: rows(db, f"SELECT count(*) FROM {t}") for t in before} == before


def test_query_formats_and_errors(tiny_spec, cli):
    import json

    assert cli("run", tiny_spec).exit_code == 0
    js = json.loads(cli("query", "SELECT name, seed FROM runs", "-f", "json").stdout)
    assert js == [{"name": "cifar_resnet[depth=8,width=1]", "seed": 0}]
    md = cli("query", "SELECT name, seed FROM runs", "-f", "markdown").stdout.splitlines()
    assert md[0] == "| name | seed |" and md[2] == "| cifar_resnet[depth=8,width=1] | 0 |"
    table = cli("query", "SELECT seed FROM runs")
    assert table.exit_code == 0 and "seed" in table.stdout
    bad = cli("query", "SELECT nope FROM runs")
    assert bad.exit_code == 2 and bad.stderr.startswith("error: SQL error") and "Traceback" not in bad.output
    runs = cli("runs", "-f", "csv")
    assert runs.exit_code == 0 and "complete" in runs.stdout


def test_query_without_database_says_what_to_do(workdir, cli):
    result = cli("query", "SELECT 1")
    assert result.exit_code == 2 and "run `bench run SPEC` first" in result.stderr


def test_eval_every_evaluates_on_schedule_and_after_the_last_epoch(workdir, cli):
    (workdir / "s.yaml").write_text(TINY_SPEC.replace("epochs: 2", "epochs: 5, eval_every: 2"))
    assert cli("run", "s.yaml").exit_code == 0
    db = workdir / "bench.duckdb"
    assert rows(db, "SELECT epoch FROM metrics WHERE name = 'eval_acc' ORDER BY epoch") == [(2,), (4,), (5,)]
    assert rows(db, "SELECT count(*) FROM metrics WHERE name = 'train_loss'") == [(5,)]
