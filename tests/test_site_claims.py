"""The leaderboard's claims page: verdicts stored by `bench claims` (here hand-made ClaimResults with figure data
in the shapes benchsuite/report/claims.py produces), rendered by `bench leaderboard build`, checked in headless
Chromium with the browser fixtures of test_site.py."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import test_site
from test_site import XSS, _snapshot, screenshot_dir

from benchsuite.report.claims import NOT_ENOUGH, NOT_SUPPORTED, SUPPORTED, ClaimResult
from benchsuite.report.figures import claim_figure
from benchsuite.report.reproduction import store_claims
from benchsuite.site.data import slug
from benchsuite.store import open_store, tables

browser, watched = test_site.browser, test_site.watched  # its headless-Chromium fixtures serve this module too

SCOPE = "a_depth"  # sorts before "all", which the page still lists first

CLAIMS = [
    ClaimResult("C1", "Block structure grows with depth", 0.31, 0.05, SUPPORTED, "score at the largest depth minus the smallest",
                ["sweep", "depth", "seeds"], [["repro_depth", 8, 2], ["repro_depth", 56, 2]], "Spearman rho: 0.91",
                {"series": [{"label": "repro_depth", "x": [8, 56], "mean": [0.1, 0.41], "sd": [0.02, 0.03]}],
                 "xlabel": "depth", "ylabel": "block score", "log": False}),
    ClaimResult("C3", "More block with less data", None, None, NOT_ENOUGH, "score at the fewest examples minus the most",
                ["sweep", "training examples"], [], "", {"xlabel": "training examples", "ylabel": "block score", "log": True}),
    ClaimResult("C4", "PC1 dominates inside blocks", 0.42, 0.01, NOT_SUPPORTED, "mean PC1 fraction inside blocks",
                ["run", "seed", "block"], [["resnet[depth=56]", 0, "3-9"]], "0 of 1 blocks dissolve after PC1 removal",
                {"bars": [{"label": "resnet[depth=56] s0", "before": 0.93, "after": 0.88}]}),
    ClaimResult("C5", XSS, 0.12, 0.02, SUPPORTED, "cross-seed CKA outside blocks minus inside",
                ["architecture", "seeds", "gap"], [[XSS, "0 vs 1", "0.120"]], "",
                {"lines": [{"label": "resnet s0/s1", "x": [0, 1, 2, 3], "y": [0.9, 0.5, 0.45, 0.85], "blocks": [[1, 2]]}]}),
    ClaimResult("C6", "Wide and deep err differently", 2.0, 0.004, SUPPORTED, "classes that differ significantly",
                ["comparison", "classes flagged"], [["wide vs deep", "3, 7"]], "",
                {"classes": [{"label": "wide vs deep", "x": [0, 1, 2, 3], "a": [0.9, 0.8, 0.85, 0.7], "b": [0.88, 0.82, 0.8, 0.9],
                              "flagged": [3]}]}),
]
# The same claim in a narrower scope, with another verdict.
SCOPED = [replace(CLAIMS[0], verdict=NOT_SUPPORTED, statistic=-0.02)]
DRAWN = ["C1", "C4", "C5", "C6"]  # the claims with figure data, in "all"


def _store(db: Path, scope: str, claims: list[ClaimResult]) -> None:
    engine = open_store(str(db))
    store_claims(engine, scope, claims)
    engine.dispose()


@pytest.fixture(scope="module")
def claims_db(tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("claims_db") / "bench.duckdb"
    open_store(str(db), create=True).dispose()
    _store(db, "all", CLAIMS)
    _store(db, SCOPE, SCOPED)
    return db


@pytest.fixture(scope="module")
def claims_site(claims_db, tmp_path_factory) -> Path:
    from benchsuite.site import build_site

    out = tmp_path_factory.mktemp("claims_site") / "site"
    report = build_site(str(claims_db), out)
    assert (report.pages, report.drawn) == (2, len(DRAWN) + 1)  # index and claims; one figure in the narrower scope
    return out


def test_claims_page_renders_verdicts_evidence_and_figures(claims_site, watched, tmp_path_factory):
    page = watched.open((claims_site / "index.html").as_uri())
    page.click("header nav a[href='claims.html']")
    page.wait_for_load_state("load")
    assert page.url.endswith("/claims.html") and page.inner_text("h1") == "Claims of the paper"
    assert page.get_attribute("header nav a[href='claims.html']", "aria-current") == "page"
    assert page.eval_on_selector_all("main h2", "hs => hs.map(h => h.textContent)") == ["All runs", f"Runs of {SCOPE}"]

    articles = page.eval_on_selector_all("article.claim", """as => as.map(a => ({
        id: a.id, title: a.querySelector('h3').textContent, verdict: a.querySelector('.verdict').textContent,
        colour: getComputedStyle(a.querySelector('.verdict')).backgroundColor, text: a.innerText,
        images: a.querySelectorAll('img').length}))""")
    assert [a["title"].split(":")[0] for a in articles] == [c.claim for c in CLAIMS] + ["C1"]
    assert [a["verdict"] for a in articles] == [c.verdict for c in CLAIMS + SCOPED]
    colours = {a["verdict"]: a["colour"] for a in articles}
    assert len(set(colours.values())) == 3, colours  # supported, not supported, not enough runs look different
    assert [a["images"] for a in articles] == [int(c.claim in DRAWN) for c in CLAIMS] + [1]
    c1, c3, c4, c5 = articles[:4]
    assert "0.31 ± 0.05: score at the largest depth minus the smallest" in c1["text"] and "Spearman rho: 0.91" in c1["text"]
    assert "repro_depth\t56\t2" in c1["text"]  # the evidence table
    assert "– ± –" in c3["text"] and "No stored results for this claim yet." in c3["text"]
    assert "0 of 1 blocks dissolve" in c4["text"]
    assert c5["title"] == f"C5: {XSS}" and XSS in c5["text"]  # markup in a title or a cell is shown as text
    assert page.locator(f"a[href='#{c5['id']}']").inner_text() == "C5"

    assert watched.broken_images() == []
    assert watched.dialogs == [] and watched.problems == []
    html = (claims_site / "claims.html").read_text()
    assert XSS not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    page.screenshot(path=screenshot_dir(tmp_path_factory) / "claims.png", full_page=True)


def test_site_and_docs_draw_the_same_claim_figures(claims_site, tmp_path):
    for c in CLAIMS:
        drawn = claims_site / "fig" / "claims" / f"{slug('all')}-{c.claim}.svg"
        assert claim_figure(c, tmp_path / f"{c.claim}.svg") == (c.claim in DRAWN) == drawn.is_file()
        if drawn.is_file():
            assert drawn.read_bytes() == (tmp_path / f"{c.claim}.svg").read_bytes()


def test_claims_build_is_deterministic_and_incremental(claims_db, claims_site, tmp_path, cli):
    db = tmp_path / "db" / claims_db.name
    db.parent.mkdir()
    shutil.copy(claims_db, db)
    out = tmp_path / "site"
    result = cli("leaderboard", "build", "--db", db, "--out", out)
    assert result.exit_code == 0, result.output
    first = _snapshot(out)
    assert {k: v[0] for k, v in first.items()} == {k: v[0] for k, v in _snapshot(claims_site).items()}
    assert not any(b"<dc:date>" in v[0] for v in first.values())
    assert " 0 figures drawn" in cli("leaderboard", "build", "--db", db, "--out", out).output
    assert _snapshot(out) == first  # nothing rewritten

    from benchsuite.site import build_site

    _store(db, SCOPE, [replace(SCOPED[0], verdict=SUPPORTED)])  # the figure's title shows the verdict
    changed = build_site(str(db), out)
    assert (changed.drawn, changed.kept) == (1, len(DRAWN))
    after = _snapshot(out)
    assert [k for k in first if k.endswith(".svg") and after[k] != first[k]] == [f"fig/claims/{slug(SCOPE)}-C1.svg"]

    engine = open_store(str(db))
    with engine.begin() as conn:
        conn.execute(tables.claims.delete())
    engine.dispose()
    emptied = build_site(str(db), out)  # without claims: no page, no link, no figures
    assert emptied.pages == 1 and emptied.removed == len(DRAWN) + 2
    assert not (out / "claims.html").exists() and not (out / "fig").exists()
    assert "claims.html" not in (out / "index.html").read_text()
