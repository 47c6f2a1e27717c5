import json

import pytest

from benchsuite.spec import expand, parse_spec, run_id, run_name
from conftest import TINY_SPEC

BAD = [
    ("unknown key", TINY_SPEC.replace("seeds:", "seedz:"), "tiny.yaml: seedz: unknown key; allowed: name, description"),
    ("wrong type", TINY_SPEC.replace("epochs: 2", "epochs: two"), "tiny.yaml: train.epochs: Input should be a valid integer"),
    ("depth not 6n+2", TINY_SPEC.replace("depth: [8]", "depth: [8, 21]"), "tiny.yaml: family.grid.depth[1]: depth must be 6n+2"),
    ("empty grid", TINY_SPEC.replace("depth: [8]", "depth: []"), "tiny.yaml: family.grid.depth: empty list"),
    ("unknown parameter", TINY_SPEC.replace("width: [1]", "widht: [1]"), "family.grid.widht: unknown parameter of cifar_resnet; allowed: depth, width"),
    ("unknown analysis", TINY_SPEC.replace("[cka, pcs]", "[cka, pca]"), "analyses[1].kind: unknown analysis 'pca'; allowed:"),
    ("literal", TINY_SPEC.replace("lr: 0.05", "lr: 0.05, optimizer: adam"), "train.optimizer: Input should be 'sgd' or 'adamw'"),
    ("empty seeds", TINY_SPEC.replace("seeds: [0]", "seeds: []"), "tiny.yaml: seeds: empty list"),
    ("bad yaml", "name: [", "tiny.yaml: line 1: not valid YAML"),
    ("union grid", TINY_SPEC.replace("grid: {depth: [8], width: [1]}", "grid: [{depth: [8]}, {depth: [9]}]"),
     "tiny.yaml: family.grid[1].depth[0]: depth must be 6n+2"),
    ("size one", TINY_SPEC.replace("train_size: 300", "train_size: [0.5, 1]"), "train_size 1 is a single example; write 1.0"),
]


@pytest.mark.parametrize("label,text,message", BAD, ids=[b[0] for b in BAD])
def test_bad_specs_fail_with_one_line_and_write_nothing(workdir, cli, label, text, message):
    (workdir / "tiny.yaml").write_text(text)
    for command in (["validate"], ["run"]):
        result = cli(*command, "tiny.yaml")
        assert result.exit_code == 2, result.output
        err = result.stderr.strip()
        assert "Traceback" not in result.output and len(err.splitlines()) == 1, err
        assert message in err
    assert sorted(p.name for p in workdir.iterdir()) == ["tiny.yaml"]  # no database, no artifacts


def test_expansion_names_and_ids():
    spec = parse_spec(TINY_SPEC.replace("depth: [8]", "depth: [8, 20]").replace("seeds: [0]", "seeds: [0, 1]"))
    configs = expand(spec)
    assert [(run_name(c), c.seed) for c in configs] == [
        ("cifar_resnet[depth=8,width=1]", 0), ("cifar_resnet[depth=8,width=1]", 1),
        ("cifar_resnet[depth=20,width=1]", 0), ("cifar_resnet[depth=20,width=1]", 1)]
    ids = [run_id(c) for c in configs]
    assert len(set(ids)) == 4
    # Defaults are filled before hashing: spelling out a default gives the same run id.
    explicit = parse_spec(TINY_SPEC.replace("lr: 0.05", "lr: 0.05, optimizer: sgd, momentum: 0.9"))
    assert run_id(expand(explicit)[0]) == run_id(expand(parse_spec(TINY_SPEC))[0])
    # Analyses do not change what is trained.
    assert run_id(expand(parse_spec(TINY_SPEC.replace("[cka, pcs]", "[cka]")))[0]) == ids[0]


def test_union_grid_and_training_set_sizes():
    spec = parse_spec(TINY_SPEC.replace("grid: {depth: [8], width: [1]}", "grid: [{depth: 56, width: 1}, {depth: [8], width: [4]}, {depth: 8, width: 4}]")
                      .replace("train_size: 300", "train_size: [0.25, 300]"))
    configs = expand(spec)
    assert [(run_name(c), c.dataset.train_size) for c in configs] == [
        ("cifar_resnet[depth=56,width=1]", 0.25), ("cifar_resnet[depth=56,width=1]", 300),
        ("cifar_resnet[depth=8,width=4]", 0.25), ("cifar_resnet[depth=8,width=4]", 300)]  # the repeated point once
    # A scalar size gives the same run id as a one-element sweep of it.
    single = expand(parse_spec(TINY_SPEC.replace("grid: {depth: [8], width: [1]}", "grid: {depth: 8, width: 4}")))
    assert run_id(single[0]) == run_id(configs[3])


def test_schema_command_prints_json_schema(cli):
    result = cli("spec", "schema")
    schema = json.loads(result.stdout)
    assert {"name", "family", "dataset", "train", "seeds", "analyses"} <= set(schema["properties"])
    assert "family" in schema["required"]


def test_every_example_spec_validates(cli):
    from pathlib import Path

    specs = sorted(Path(__file__).parents[1].glob("specs/**/*.yaml"))
    assert specs
    result = cli("validate", *specs)
    assert result.exit_code == 0, result.output


BAD_SETS = [
    ("train.epochz=5", "tiny.yaml --set train.epochz=5: train.epochz: unknown key; allowed: epochs,"),
    ("train.epochs=two", "tiny.yaml --set train.epochs=two: train.epochs: Input should be a valid integer"),
    ("family.grid.depth=[8,21]", "tiny.yaml --set family.grid.depth=[8,21]: family.grid.depth[1]: depth must be 6n+2"),
    ("seeds=[]", "tiny.yaml --set seeds=[]: seeds: empty list"),
    ("epochs", "tiny.yaml --set epochs: expected KEY=VALUE"),
    ("train.epochs.n=1", "tiny.yaml --set train.epochs.n=1: train.epochs is not a mapping"),
    ("seeds=[0", "tiny.yaml --set seeds=[0: the value is not valid YAML"),
]


@pytest.mark.parametrize("item,message", BAD_SETS, ids=[b[0] for b in BAD_SETS])
def test_bad_overrides_fail_with_one_line_and_write_nothing(tiny_spec, cli, item, message):
    for command in (["validate"], ["run"], ["run", "--dry-run"]):
        result = cli(*command, "tiny.yaml", "--set", "train.epochs=3", "--set", item)
        assert result.exit_code == 2, result.output
        err = result.stderr.strip()
        assert "Traceback" not in result.output and len(err.splitlines()) == 1, err
        assert message in err, err
    assert sorted(p.name for p in tiny_spec.parent.iterdir()) == ["tiny.yaml"]


def test_overrides_change_the_plan_and_are_stored_with_the_spec(tiny_spec, cli):
    from benchsuite.spec import read_spec
    from conftest import rows

    sets = ["--set", "family.grid.depth=[8, 14]", "--set", "seeds=[0,1]", "--set", "train.epochs=1"]
    assert "ok, 4 runs" in cli("validate", "tiny.yaml", *sets).stdout
    plan = cli("run", "tiny.yaml", "--dry-run", *sets)
    assert plan.exit_code == 0 and "4 of 4 runs to do" in plan.stdout
    spec, text = read_spec("tiny.yaml", sets[1::2])
    assert text.splitlines()[0] == "# tiny.yaml with --set 'family.grid.depth=[8, 14]' --set 'seeds=[0,1]' --set train.epochs=1"
    assert parse_spec(text) == spec and spec.train.epochs == 1 and spec.family.grid == {"depth": [8, 14], "width": [1]}
    assert read_spec(tiny_spec)[1] == TINY_SPEC  # no overrides: the file's own text

    result = cli("run", tiny_spec, "--set", "train.epochs=1")
    assert result.exit_code == 0, result.output
    db = tiny_spec.parent / "bench.duckdb"
    assert rows(db, "SELECT epochs_done FROM runs") == [(1,)]
    (stored,), = rows(db, "SELECT yaml FROM specs")
    assert stored.startswith("# tiny.yaml with --set train.epochs=1\n") and parse_spec(stored).train.epochs == 1


def test_quickstart_measures_what_the_index_grid_colours():
    """The site's index colours a cell by block score: the quickstart must run block detection (whether a
    model has a block is the README's measurement of a full run; too slow for CI)."""
    from pathlib import Path

    from benchsuite.spec import load_spec

    spec = load_spec(Path(__file__).parents[1] / "specs" / "quickstart.yaml")
    assert {"cka", "pcs", "blocks"} <= {a.kind for a in spec.analyses}
    assert max(spec.family.grid["depth"]) >= 110 and len(spec.seeds) == 2
