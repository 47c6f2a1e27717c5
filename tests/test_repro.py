"""specs/repro/ end to end on a reduced configuration: every spec runs, and `bench claims` regenerates
docs/REPRODUCTION.md deterministically with the structure of the committed report."""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).parents[1]
REPRO = sorted((ROOT / "specs" / "repro").glob("digits_*.yaml"))


def small_depth(d: int) -> int:
    return 8 if d <= 20 else 14


def small_width(w: int) -> int:
    return 1 if w == 1 else 2


def shrink(text: str) -> str:
    """The same study with tiny models, one epoch, two seeds and a small data set."""
    spec = yaml.safe_load(text)
    spec["train"].update(epochs=2, warmup_epochs=0)
    size = spec["dataset"].get("train_size")
    spec["dataset"].update(eval_size=100, train_size=[120, 240] if isinstance(size, list) else 240)
    spec["seeds"] = [0, 1]
    spec["measure"]["batch_size"] = 50
    grids = spec["family"]["grid"] if isinstance(spec["family"]["grid"], list) else [spec["family"]["grid"]]
    for grid in grids:
        grid["depth"] = sorted({small_depth(d) for d in grid["depth"]})
        grid["width"] = sorted({small_width(w) for w in grid["width"]})
    out = yaml.safe_dump(spec, sort_keys=False)
    out = re.sub(r"depth=(\d+)", lambda m: f"depth={small_depth(int(m.group(1)))}", out)
    return re.sub(r"width=(\d+)", lambda m: f"width={small_width(int(m.group(1)))}", out)


def headings(text: str) -> list[str]:
    return [line.split(":")[0] for line in text.splitlines() if line.startswith("#")]


def test_repro_specs_run_and_regenerate_the_report(workdir, cli):
    assert [p.stem for p in REPRO] == ["digits_datasize", "digits_depth", "digits_wide_deep", "digits_width"]
    for path in REPRO:
        (workdir / path.name).write_text(shrink(path.read_text()))
        result = cli("run", path.name)
        assert result.exit_code == 0, result.output
    out = workdir / "docs" / "REPRODUCTION.md"
    reports = []
    for _ in range(2):
        assert cli("claims", "--write", out, "-f", "csv").exit_code == 0
        reports.append((out.read_text(), sorted((p.name, p.read_bytes()) for p in out.parent.joinpath("figures").iterdir())))
    assert reports[0] == reports[1]
    text = reports[0][0]
    for path in REPRO:
        assert f"({path.name})" in text  # every spec's runs are in the report
    committed = (ROOT / "docs" / "REPRODUCTION.md").read_text()
    assert headings(text) == headings(committed)
    verdicts = re.findall(r"\*\*Verdict: (supported|not supported|not enough runs)\.\*\*", text)
    assert len(verdicts) == 8


EVIDENCE = ROOT / "results" / "repro"


def test_shipped_evidence_regenerates_the_report_and_draws_the_site(workdir, cli):
    """results/repro is the committed report's evidence (`bench db export` of the Fashion-MNIST study): imported
    into an empty database, `bench claims` writes docs/REPRODUCTION.md and its figures byte for byte without
    training, and `bench leaderboard build` draws the study's site."""
    size = sum(p.stat().st_size for p in EVIDENCE.iterdir())
    assert size < 20 * 2**20, f"results/repro holds {size / 2**20:.1f} MiB"
    assert cli("db", "import", EVIDENCE, "--db", "study.duckdb").exit_code == 0
    out = workdir / "docs" / "REPRODUCTION.md"
    assert cli("claims", "--db", "study.duckdb", "--write", out, "-f", "csv").exit_code == 0
    assert out.read_text() == (ROOT / "docs" / "REPRODUCTION.md").read_text()
    figures = sorted(p.name for p in out.parent.joinpath("figures").iterdir())
    assert figures == sorted(p.name for p in (ROOT / "docs" / "figures").glob("C*.svg"))
    for name in figures:
        assert (out.parent / "figures" / name).read_bytes() == (ROOT / "docs" / "figures" / name).read_bytes(), name
    assert cli("leaderboard", "build", "--db", "study.duckdb", "--out", "site").exit_code == 0
    index = (workdir / "site" / "index.html").read_text()
    specs = [yaml.safe_load(p.read_text())["name"] for p in sorted((ROOT / "specs" / "repro").glob("fashion_*.yaml"))]
    assert len(specs) == 4 and all(name in index for name in specs)
