"""README stays true: its quickstart lines, the CI command, the documented tables and commands."""

import re
from pathlib import Path

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()


def quickstart_lines() -> list[str]:
    block = README.split("## Quickstart", 1)[1].split("```", 2)[1]
    return [line for line in block.splitlines() if line.strip()]


def test_quickstart_is_two_lines_and_ci_runs_the_second():
    install_run, test = quickstart_lines()
    assert install_run == "pip install -e . && bench run specs/quickstart.yaml"
    assert test in (ROOT / ".ci" / "run").read_text().splitlines()


def test_every_table_is_documented():
    from benchsuite.store.tables import metadata

    for name, table in metadata.tables.items():
        row = re.search(rf"^\| {name} \|.*$", README, re.M)
        assert row, f"table {name} missing from README"
        for column in table.columns:
            assert column.name in row.group(0), f"{name}.{column.name} missing from README"


def test_every_command_is_documented():
    from benchsuite.cli import app

    for info in app.registered_commands:
        assert f"bench {info.name or info.callback.__name__}" in README
    for group in app.registered_groups:
        assert f"bench {group.name}" in README


def test_every_analysis_kind_is_documented():
    from benchsuite.spec import analysis_kinds

    for kind in analysis_kinds():
        assert f"| `{kind}` |" in README, f"analysis {kind} missing from README"
