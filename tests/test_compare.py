"""`bench compare`: a database against itself, a changed copy, and its Parquet export."""

import csv
import shutil

import pytest
import sqlalchemy as sa

from conftest import make_spec


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """One tiny run with CKA, PCs and blocks, and claims rows to compare."""
    from typer.testing import CliRunner

    from benchsuite.cli import app

    folder = tmp_path_factory.mktemp("compare")
    (folder / "s.yaml").write_text(make_spec(analyses="[cka, pcs, blocks]"))
    db = folder / "a.duckdb"
    result = CliRunner().invoke(app, ["run", str(folder / "s.yaml"), "--db", str(db), "--artifacts", str(folder / "art")])
    assert result.exit_code == 0, result.output
    _sql(db, "INSERT INTO claims (scope, claim, title, statistic, verdict) VALUES ('all', 'C1', 't', 0.5, 'supported')")
    return db


def _csv(text: str) -> list[list[str]]:
    return list(csv.reader(text.splitlines()))


def _sql(db, statement: str) -> None:
    engine = sa.create_engine(f"duckdb:///{db}", poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(sa.text(statement))


def _copy(stored, tmp_path, *statements: str):
    db = tmp_path / "b.duckdb"
    shutil.copy(stored, db)
    for s in statements:
        _sql(db, s)
    return db


def test_a_database_equals_itself_and_its_export(stored, tmp_path, cli):
    same = cli("compare", stored, stored)
    assert same.exit_code == 0, same.output
    assert "DIFFERS" not in same.stdout and "within tolerance" in same.stdout
    quantities = [r[2] for r in _csv(cli("compare", stored, stored, "-f", "csv").stdout)[1:]]
    assert quantities == ["accuracy", "cka", "cka_pc_removed", "pc1", "block_score", "claim C1"]
    assert cli("db", "export", tmp_path / "export", "--db", stored).exit_code == 0
    exported = cli("compare", stored, tmp_path / "export", "-f", "csv")
    assert exported.exit_code == 0, exported.output
    assert [r[-1] for r in _csv(exported.stdout)[1:]] == ["ok"] * 6


def test_export_leaves_out_the_excluded_tables(stored, tmp_path, cli):
    out = tmp_path / "export"
    assert cli("db", "export", out, "--db", stored).exit_code == 0 and (out / "pc_scores.parquet").exists()
    assert cli("db", "export", out, "--db", stored, "--exclude", "pc_scores").exit_code == 0
    assert not (out / "pc_scores.parquet").exists() and (out / "pcs.parquet").exists()  # no stale file stays
    bad = cli("db", "export", tmp_path / "other", "--db", stored, "--exclude", "pc_score")
    assert bad.exit_code == 2 and "pc_score" in bad.stderr and "Traceback" not in bad.output
    assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "other").exists()


def test_one_changed_cka_value_is_named_with_its_run_and_layers(stored, tmp_path, cli):
    changed = _copy(stored, tmp_path, "UPDATE cka SET value = value - 0.125 WHERE layer_a = 1 AND layer_b = 3 AND NOT pc_removed")
    result = cli("compare", stored, changed, "-f", "csv")
    assert result.exit_code == 1, result.output
    bad = [line for line in result.stdout.splitlines() if line.endswith("DIFFERS")]
    assert len(bad) == 1, result.stdout
    assert bad[0].startswith('"cifar_resnet[depth=8,width=1]",0,cka,') and "layers 1 x 3" in bad[0]
    *_, max_diff, mean_diff, tol, where, _ = _csv(bad[0])[0]
    assert float(max_diff) == pytest.approx(0.125) and float(mean_diff) == pytest.approx(0.125 / 16)
    # A tolerance as an option: the same difference passes when allowed.
    assert cli("compare", stored, changed, "--cka-tol", "0.2").exit_code == 0


def test_verdicts_and_one_side_only_runs(stored, tmp_path, cli):
    other = _copy(stored, tmp_path, "UPDATE claims SET verdict = 'not supported'",
                  "INSERT INTO runs SELECT * REPLACE ('extra' AS run_id, 7 AS seed) FROM runs")
    result = cli("compare", stored, other, "-f", "csv")
    assert result.exit_code == 1, result.output
    assert "all,,claim C1,supported,not supported,,,,verdict,DIFFERS" in result.stdout.splitlines()
    assert result.stdout.splitlines()[-2:] == ["run,seed,status,run_id", '"cifar_resnet[depth=8,width=1]",7,complete,extra']


def test_a_missing_side_is_one_line(tmp_path, cli):
    result = cli("compare", tmp_path / "nope.duckdb", tmp_path / "nope.duckdb")
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
