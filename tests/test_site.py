"""The static leaderboard: built from a real `bench run`, checked in headless Chromium.

One module-scoped database (2 depths x 2 seeds, 1 epoch, tiny digits data) gets real CKA, PC
and cross-model rows from `bench run`, plus synthetic rows for the analyses a one-epoch run
cannot show (blocks on depth 8 only, probes, block deletion, error patterns), written through
the store's writer like any analysis.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urljoin, urlparse

import pytest
import sqlalchemy as sa

from benchsuite.store import open_store
from benchsuite.store.writer import AnalysisRows, RunRows, record_spec, write_analyses, write_run
from conftest import make_spec

playwright_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
XSS = "<script>alert(1)</script>"

SPEC = make_spec("site", train_size=200, eval_size=100, depths="[8, 14]", seeds="[0, 1]", epochs=1,
                 analyses="[cka, pcs, {kind: cross_cka, across: all}, measure_agreement]",
                 measure="{batch_size: 50, similarity: [linear_cka, {name: rbf_cka, bandwidth: 0.5}, procrustes]}")


def _runs(db: Path) -> list[tuple[str, str, int, int]]:
    """(run_id, name, seed, number of layers) of every run."""
    engine = open_store(str(db))
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(
            "SELECT r.run_id, r.name, r.seed, count(l.layer) FROM runs r JOIN layers l USING (run_id) "
            "GROUP BY ALL ORDER BY r.name, r.seed"))]


def add_blocks(db: Path, run_id: str, n_layers: int, score: float) -> None:
    block = dict(run_id=run_id, block=0, start_layer=1, end_layer=n_layers - 2, size_fraction=(n_layers - 2) / n_layers,
                 mean_cka=0.9, mean_pc1=0.7, survives_pc1_removal=False, score=score)
    summary = dict(run_id=run_id, score=score, num_blocks=1, largest_fraction=block["size_fraction"])
    write_analyses(open_store(str(db)), [AnalysisRows(f"blocks-{run_id}", "blocks", [run_id], {},
                                                      rows={"blocks": [block], "block_scores": [summary]})])


def _synthetic_analyses(db: Path) -> None:
    runs = _runs(db)
    deep = [r for r in runs if "depth=14" in r[1]]
    shallow = [r for r in runs if "depth=8" in r[1]]
    results = []
    for run_id, _, seed, n in shallow:
        results.append(AnalysisRows(f"probes-{run_id}", "probes", [run_id], {}, rows={
            "probes": [dict(run_id=run_id, layer=i, accuracy=0.3 + 0.1 * i, train_accuracy=0.35 + 0.1 * i) for i in range(n)],
            "ablations": [dict(run_id=run_id, target="block:1-3", start_layer=1, end_layer=3, accuracy=0.2,
                               accuracy_drop=0.05 + 0.01 * seed)]}))
    pair = [shallow[0][0], deep[0][0]]
    results.append(AnalysisRows("errors-wide-deep", "errors", pair, {"group_a": "depth=8", "group_b": "depth=14"}, rows={
        "error_classes": [dict(**{"class": c}, mean_a=0.5 + 0.04 * c, mean_b=0.55, statistic=1.5 * c - 6, p_value=0.5 / (c + 1),
                               q_value=0.9 / (c + 1), significant=c > 7) for c in range(10)],
        "error_agreement": [dict(run_a=pair[0], run_b=pair[1], both_right=0.2, both_wrong=0.5, a_only_right=0.1,
                                 b_only_right=0.2, agreement=0.7)]}))
    write_analyses(open_store(str(db)), results)
    for score, (run_id, _, _, n) in zip([0.62, 0.48], shallow):
        add_blocks(db, run_id, n, score)


@pytest.fixture(scope="module")
def results_db(tmp_path_factory) -> Path:
    from typer.testing import CliRunner

    from benchsuite.cli import app

    root = tmp_path_factory.mktemp("site_db")
    (root / "site.yaml").write_text(SPEC)
    db = root / "bench.duckdb"
    result = CliRunner().invoke(app, ["run", str(root / "site.yaml"), "--db", str(db), "--artifacts", str(root / "artifacts")],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    _synthetic_analyses(db)
    return db


def copy_db(db: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(db, folder / db.name)
    return folder / db.name


@pytest.fixture(scope="module")
def built_site(results_db, tmp_path_factory) -> Path:
    from benchsuite.site import build_site

    out = tmp_path_factory.mktemp("served") / "sub" / "site"
    report = build_site(str(results_db), out)
    assert report.pages == 7 and report.drawn > 0  # index, 2 architectures, 2 cross-model, errors, measures
    return out


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium chromium-driver")
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def server(built_site):
    """A static server on 127.0.0.1 whose root is two levels above the site: the site lives under a sub-path."""
    handler = functools.partial(_QuietHandler, directory=str(built_site.parents[1]))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}/sub/site/"
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class Watched:
    """A page that records console errors, uncaught exceptions, failed requests and dialogs."""

    def __init__(self, browser):
        self.page = browser.new_page(viewport={"width": 1366, "height": 900})
        self.problems: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(f"console: {m.text}"))
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("requestfailed", lambda r: self.problems.append(f"request failed: {r.url}"))
        self.page.on("response", lambda r: r.status >= 400 and self.problems.append(f"HTTP {r.status}: {r.url}"))
        self.page.on("dialog", self._dialog)

    def _dialog(self, dialog):
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def open(self, url: str):
        self.page.goto(url, wait_until="load")
        return self.page

    def broken_images(self) -> list[str]:
        return self.page.eval_on_selector_all(
            "img", "imgs => imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")


@pytest.fixture
def watched(browser):
    w = Watched(browser)
    yield w
    w.page.close()


def screenshot_dir(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("BENCH_SCREENSHOTS") or tmp_path_factory.getbasetemp() / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_every_page_loads_and_every_link_and_image_resolves(server, watched, tmp_path_factory):
    seen, queue, pages = set(), [urljoin(server, "index.html")], 0
    while queue:
        url = queue.pop()
        if url in seen:
            continue
        seen.add(url)
        page = watched.open(url)
        pages += 1
        assert watched.broken_images() == [], url
        for href in page.eval_on_selector_all("a[href]", "as => as.map(a => a.href)"):
            target = href.split("#")[0]
            assert urlparse(target).netloc == urlparse(server).netloc, f"{url} links off-site: {href}"
            assert target.startswith(server), f"{url} links outside the site's folder: {href}"
            if target.endswith(".html"):
                queue.append(target)
            else:  # a figure opened on its own
                assert watched.page.request.get(target).status == 200, target
        assert "Provenance" in page.inner_text("footer")
    assert pages == 7
    assert watched.problems == []
    watched.open(urljoin(server, "index.html")).screenshot(path=screenshot_dir(tmp_path_factory) / "index.png", full_page=True)
    arch = watched.page.get_attribute("a.cell", "href")
    watched.open(urljoin(server, arch)).screenshot(path=screenshot_dir(tmp_path_factory) / "architecture.png", full_page=True)


def test_pages_work_from_file_urls(built_site, watched):
    for name in ["index.html", *sorted(p.name for p in built_site.glob("arch-*.html"))]:
        watched.open((built_site / name).as_uri())
        assert watched.broken_images() == [], name
    assert watched.problems == []


def _column(page, index: int) -> list[str]:
    return page.eval_on_selector_all(
        "#ranking tbody tr", f"rows => rows.map(r => r.cells[{index}].dataset.sort ?? r.cells[{index}].textContent.trim())")


def test_ranking_table_sorts_on_header_click(server, watched):
    page = watched.open(urljoin(server, "index.html"))
    headers = [h.strip(" ↕▲▼") for h in page.eval_on_selector_all("#ranking thead th", "ths => ths.map(t => t.textContent.trim())")]
    accuracy, params, name = headers.index("accuracy %"), headers.index("parameters"), headers.index("architecture")
    assert len(_column(page, accuracy)) == 2
    page.click("#ranking th:nth-child(%d) button" % (params + 1))
    values = [float(v) for v in _column(page, params)]
    assert values == sorted(values) and values[0] < values[1]
    assert page.get_attribute(f"#ranking th:nth-child({params + 1})", "aria-sort") == "ascending"
    page.click("#ranking th:nth-child(%d) button" % (params + 1))
    assert [float(v) for v in _column(page, params)] == sorted(values, reverse=True)
    page.click("#ranking th:nth-child(%d) button" % (name + 1))
    assert _column(page, name) == ["cifar_resnet[depth=8,width=1]", "cifar_resnet[depth=14,width=1]"]  # natural order
    scores = _column(page, headers.index("block score"))
    assert float(scores[0]) == pytest.approx(0.55) and scores[1] == ""  # depth 14 has no block analysis
    assert watched.problems == []


def test_grid_cells_are_coloured_by_block_score_and_link_to_their_pages(server, watched):
    page = watched.open(urljoin(server, "index.html"))
    cells = page.eval_on_selector_all("table.grid a.cell", "cs => cs.map(c => [c.getAttribute('href'), c.title, "
                                      "getComputedStyle(c).backgroundColor, c.textContent.replace(/\\s+/g, ' ').trim()])")
    assert [c[1] for c in cells] == ["cifar_resnet[depth=8,width=1]", "cifar_resnet[depth=14,width=1]"]  # depth rows in order
    (_, _, colour8, text8), (_, _, colour14, text14) = cells
    assert "0.55" in text8 and "no block analysis" not in text8
    assert "no block analysis" in text14 and colour14 != colour8
    assert page.inner_text("table.grid thead").count("width 1") == 1
    for href, name, _, _ in cells:
        watched.open(urljoin(server, "index.html")).click(f"a.cell[href='{href}']")
        page.wait_for_load_state("load")
        assert page.url == urljoin(server, href)
        assert page.inner_text("h1") == name
        assert watched.broken_images() == []
    assert watched.problems == []


def test_architecture_page_shows_every_measurement(built_site):
    html = next(built_site.glob("arch-cifar-resnet-depth-8-*.html")).read_text()
    for section in ["CKA between layers", "Detected blocks", "First principal component", "Linear probes", "Block deletion",
                    "mean over seeds 0, 1", "CKA after removing PC1", "First-PC squared cosine"]:
        assert section in html, section
    assert html.count("<img") == 7  # CKA per seed + mean, PC1, squared cosines, CKA after PC1 removal, probes
    for provenance in ["Spec", "Code", "Hardware", "git", "torch", "name: site"]:
        assert provenance in html, provenance
    cross = re.sub("<[^>]+>", "", (built_site / "cross-architectures.html").read_text())
    assert "cifar_resnet[depth=8,width=1] vs cifar_resnet[depth=14,width=1]" in cross
    assert "mean over 4 pairs of seeds" in cross
    errors = (built_site / "errors.html").read_text()
    assert "group_a" in errors and "Agreement between runs" in errors


def test_measures_page_shows_a_heatmap_per_measure_and_the_agreement_tables(server, watched, tmp_path_factory):
    page = watched.open(urljoin(server, "measures.html"))
    assert watched.broken_images() == []
    captions = page.eval_on_selector_all("figcaption", "fs => fs.map(f => f.textContent.trim())")
    assert captions == ["linear_cka", "procrustes", "rbf_cka[bandwidth=0.5]"]
    table = lambda name: page.eval_on_selector_all(  # noqa: E731
        f"#{name} tbody tr", "rows => rows.map(r => Array.from(r.cells, c => c.textContent.trim()))")
    correspondence = table("correspondence")
    assert [r[0] for r in correspondence] == ["linear_cka", "procrustes", "rbf_cka[bandwidth=0.5]"]
    assert all(r[1] == "4" and 0 <= float(r[2]) <= 100 for r in correspondence)  # 2 architectures x 2 ordered seed pairs
    assert [r[:2] for r in table("rank-agreement")] == [["linear_cka", "procrustes"], ["linear_cka", "rbf_cka[bandwidth=0.5]"],
                                                        ["rbf_cka[bandwidth=0.5]", "procrustes"]]  # in spec order
    assert all(-1 <= float(r[2]) <= 1 for r in table("rank-agreement"))
    assert len(table("measure-blocks")) == 3 and len(table("block-overlap")) == 3
    page.click("#rank-agreement th:nth-child(3) button")
    spearman = [float(r[2]) for r in table("rank-agreement")]
    assert spearman == sorted(spearman)
    assert "Similarity measures" in page.inner_text("nav")
    page.screenshot(path=screenshot_dir(tmp_path_factory) / "measures.png", full_page=True)
    assert watched.problems == []


def test_names_are_escaped_text_never_markup(tmp_path, watched):
    from benchsuite.site import build_site

    db = tmp_path / "xss.duckdb"
    engine = open_store(str(db), create=True)
    record_spec(engine, "h" * 16, XSS, XSS, f"name: '{XSS}'\n")
    layers = [dict(run_id="r1", measure_id="", layer=i, name=f"{XSS}{i}", stage=i) for i in range(3)]
    run = dict(run_id="r1", name=XSS, family="fam<b>", params=json.dumps({"depth": XSS, "width": 1}), dataset="d<i>",
               train_size=None, seed=0, config="{}", spec_hash="h" * 16, status="complete", device=XSS,
               versions=json.dumps({"x": XSS}), git_commit=XSS, num_params=10, epochs_done=1)
    write_run(engine, RunRows(run=run, metrics=[dict(run_id="r1", name="eval_acc", epoch=1, value=0.5)], layers=layers,
                              analyses=[AnalysisRows("a1", "cka", ["r1"], {}, rows={"cka": [
                                  dict(run_a="r1", epoch_a=1, layer_a=i, run_b="r1", epoch_b=1, layer_b=j, pc_removed=False,
                                       value=1.0 if i == j else 0.5) for i in range(3) for j in range(3)]})]))
    out = tmp_path / "site"
    build_site(str(db), out)
    for name in ["index.html", *(p.name for p in out.glob("arch-*.html"))]:
        html = (out / name).read_text()
        assert XSS not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        page = watched.open((out / name).as_uri())
        page.click("footer details summary >> nth=0")  # the spec's YAML, shown on request
        assert page.get_by_text(XSS, exact=True).first.is_visible()
        assert watched.broken_images() == []
    assert watched.dialogs == [] and watched.problems == []


@pytest.mark.parametrize("kind", ["missing", "empty"])
def test_empty_database_gives_a_page_saying_how_to_get_results(kind, tmp_path, cli, watched):
    db = tmp_path / "none.duckdb"
    if kind == "empty":
        assert cli("db", "upgrade", "--db", db).exit_code == 0
    result = cli("leaderboard", "build", "--db", db, "--out", tmp_path / "site")
    assert result.exit_code == 0, result.output
    assert db.exists() == (kind == "empty")  # building never creates a database
    page = watched.open((tmp_path / "site" / "index.html").as_uri())
    assert page.inner_text("h1") == "No results yet"
    assert "bench run specs/quickstart.yaml" in page.inner_text("main")
    assert watched.problems == []


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.relative_to(folder).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_builds_are_deterministic_and_incremental(results_db, built_site, tmp_path):
    from benchsuite.site import build_site

    db = copy_db(results_db, tmp_path / "db")
    first = build_site(str(db), tmp_path / "a")
    a, b = _snapshot(tmp_path / "a"), _snapshot(built_site)
    assert {k: v[0] for k, v in a.items()} == {k: v[0] for k, v in b.items()}  # same database, same bytes
    assert first.drawn > 0 and first.kept == 0
    manifest = json.loads((tmp_path / "a" / "bench-manifest.json").read_text())
    assert sorted(manifest["figures"]) == sorted(k for k in a if k.endswith(".svg"))
    assert not any(re.search(rb"<dc:date>|CreationDate", v[0]) for v in a.values())

    again = build_site(str(db), tmp_path / "a")
    assert (again.drawn, again.kept, again.removed) == (0, first.drawn, 0)
    assert _snapshot(tmp_path / "a") == a  # nothing rewritten: same bytes and mtimes

    run_id, _, _, n = next(r for r in _runs(db) if "depth=14" in r[1] and r[2] == 0)
    add_blocks(db, run_id, n, 0.3)  # outlines a block on that run's heatmap: one figure changes
    changed = build_site(str(db), tmp_path / "a")
    assert (changed.drawn, changed.kept) == (1, first.drawn - 1)
    after = _snapshot(tmp_path / "a")
    redrawn = [k for k in a if k.endswith(".svg") and after[k] != a[k]]
    assert len(redrawn) == 1 and f"cka-seed0-{run_id[:8]}" in redrawn[0]

    emptied = build_site(str(tmp_path / "none.duckdb"), tmp_path / "a")  # stale pages and figures go away
    assert emptied.removed > 0
    assert sorted(p.relative_to(tmp_path / "a").as_posix() for p in (tmp_path / "a").rglob("*") if p.is_file()) == [
        "bench-manifest.json", "index.html", "static/site.css", "static/sort.js"]


def test_publish_writes_a_pages_folder_and_serve_previews_it(results_db, built_site, tmp_path, cli):
    out = tmp_path / "pages"
    shutil.copytree(built_site, out)  # publishing over an earlier build redraws nothing
    result = cli("leaderboard", "publish", "--db", results_db, "--out", out, "--cname", "bench.example.org")
    assert result.exit_code == 0, result.output
    assert " 0 figures drawn" in result.output
    assert (out / ".nojekyll").read_bytes() == b"" and (out / "CNAME").read_text() == "bench.example.org\n"
    assert (out / "index.html").is_file()

    proc = subprocess.Popen([sys.executable, "-m", "benchsuite", "leaderboard", "serve", "--no-build", "--out", str(out),
                             "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"})
    try:
        line = proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert url, line
        from urllib.request import urlopen

        with urlopen(url.group(0) + "index.html", timeout=10) as response:
            assert response.status == 200 and b"Where block structure appears" in response.read()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
