"""benchsuite.open(): the notebook API, and examples/results.ipynb executed on a quickstart-like database."""

from pathlib import Path

import numpy as np
import pytest

from conftest import make_spec, rows

NOTEBOOK = Path(__file__).parents[1] / "examples" / "results.ipynb"


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    """Two depths x two seeds with CKA, PCs and blocks, and the claims evaluated, as after the quickstart."""
    from typer.testing import CliRunner

    from benchsuite.cli import app

    folder = tmp_path_factory.mktemp("notebook")
    (folder / "s.yaml").write_text(make_spec(depths="[8, 14]", seeds="[0, 1]", analyses="[cka, pcs, blocks]"))
    path = folder / "bench.duckdb"
    runner = CliRunner()
    for args in (["run", str(folder / "s.yaml"), "--artifacts", str(folder / "art")], ["claims"]):
        result = runner.invoke(app, [*args, "--db", str(path)])
        assert result.exit_code == 0, result.output
    return path


def test_api_reads_what_the_database_holds(db):
    import benchsuite
    from benchsuite.errors import BenchError

    results = benchsuite.open(str(db))
    runs = results.runs()
    assert list(runs.columns[:5]) == ["name", "seed", "dataset", "status", "epochs"] and len(runs) == 4
    assert (runs.status == "complete").all()
    run_id = runs.run_id[3]
    heat = results.heatmap(runs.name[3], seed=int(runs.seed[3]))
    # The labelled array is the stored heatmap, read here with plain SQL.
    names = [n for (n,) in rows(db, f"SELECT name FROM layers WHERE run_id = '{run_id}' ORDER BY layer")]
    assert list(heat.index) == list(heat.columns) == names
    stored = np.full((len(names), len(names)), np.nan)
    for a, b, v in rows(db, f"SELECT layer_a, layer_b, value FROM cka WHERE run_a = '{run_id}' AND run_b = run_a AND NOT pc_removed"):
        stored[a, b] = v
    assert np.array_equal(heat.to_numpy(), stored)
    assert results.heatmap(run_id, pc_removed=True).shape == stored.shape
    assert results.sql("SELECT count(*) AS n FROM runs").n[0] == 4
    assert list(results.claims().claim) == [f"C{i}" for i in range(1, 9)]
    with pytest.raises(BenchError, match="only reads"):
        results.sql("DELETE FROM runs")
    with pytest.raises(BenchError, match="has seeds 0, 1; pass seed="):
        results.heatmap(runs.name[3])
    fig = results.plot_heatmap(run_id)
    assert fig.axes[0].get_title().startswith("CKA, seed")
    assert len(results.plot_pc1(runs.name[3]).axes[0].lines) == 3  # two seeds and their mean


def test_example_notebook_runs(db, monkeypatch):
    import nbclient
    import nbformat

    monkeypatch.setenv("BENCH_DB", str(db))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(db.parent)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 2  # the heatmap and the PC1 lines
    tables = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert any("cifar_resnet[depth=14,width=1]" in t for t in tables) and any("C8" in t for t in tables)
