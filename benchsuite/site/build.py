"""Build the static leaderboard: read the database, draw the figures, render leaderboard/templates.

The output folder is self-contained (relative links, no CDN), so it works from file://, from
`bench leaderboard serve` and from any sub-path of a static host. Builds are deterministic (the
same database gives the same bytes) and incremental: `bench-manifest.json` in the output keys
every figure by a hash of its input data and drawing code, unchanged figures are not redrawn,
unchanged files are not rewritten, and files an earlier build wrote that this one did not are
removed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import jinja2
import numpy as np

from benchsuite.errors import BenchError
from benchsuite.report.claims import NOT_SUPPORTED, SUPPORTED, ClaimResult
from benchsuite.report.figures import has_figure
from benchsuite.site import figures
from benchsuite.site.data import Group, Run, SiteData, grid_axes, load_site_data, per_layer, slug, value_key

MANIFEST = "bench-manifest.json"


def leaderboard_dir() -> Path:
    here = Path(__file__).resolve().parents[2] / "leaderboard"
    if here.is_dir():
        return here
    raise BenchError("the leaderboard/ templates folder is missing; install benchsuite from its repository (pip install -e .)")


@dataclass
class BuildReport:
    out: Path
    pages: int = 0
    drawn: int = 0  # figures drawn by this build
    kept: int = 0  # figures whose input was unchanged
    removed: int = 0  # files of an earlier build no longer produced


class _Output:
    """Writes into the output folder, only when bytes change, and remembers what it wrote."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        try:
            old = json.loads((root / MANIFEST).read_text())
        except (OSError, ValueError):
            old = {}
        self.old_figures: dict[str, str] = old.get("figures", {})
        self.old_files: list[str] = old.get("files", [])
        self.figures: dict[str, str] = {}
        self.files: set[str] = set()
        self.report = BuildReport(root)
        # A figure's key covers its drawing code and matplotlib, so changing either redraws it.
        code = b"".join(p.read_bytes() for p in figures.SOURCES) + figures.matplotlib.__version__.encode()
        self.code_hash = hashlib.sha256(code).hexdigest()

    def write(self, rel: str, data: bytes) -> None:
        path = self.root / rel
        self.files.add(rel)
        if path.is_file() and path.read_bytes() == data:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def figure(self, rel: str, draw: Callable[..., bytes], **data: Any) -> str:
        """Draw `draw(**data)` into `rel` unless the manifest holds it with the same key; returns `rel`."""
        blob = json.dumps([draw.__name__, data], sort_keys=True, default=_jsonable).encode()
        key = hashlib.sha256(self.code_hash.encode() + blob).hexdigest()
        if self.old_figures.get(rel) == key and (self.root / rel).is_file():
            self.files.add(rel)
            self.report.kept += 1
        else:
            self.write(rel, draw(**data))
            self.report.drawn += 1
        self.figures[rel] = key
        return rel

    def finish(self) -> BuildReport:
        for rel in sorted(set(self.old_files) - self.files):
            if Path(rel).is_absolute() or ".." in Path(rel).parts:
                continue  # a manifest edited by hand never makes us delete outside the folder
            path = self.root / rel
            if path.is_file():
                path.unlink()
                self.report.removed += 1
            for parent in path.parents:  # drop folders the removal emptied
                if parent == self.root or not parent.is_dir() or any(parent.iterdir()):
                    break
                parent.rmdir()
        manifest = {"figures": dict(sorted(self.figures.items())), "files": sorted(self.files)}
        self.write(MANIFEST, (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
        return self.report


def _jsonable(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"cannot key a figure on {type(o).__name__}")


# ---------------------------------------------------------------- formatting (Jinja filters)

def _finite(x: Any) -> bool:
    return x is not None and not (isinstance(x, float) and not math.isfinite(x))


def fmt_num(x: Any, digits: int = 3) -> str:
    return f"{x:.{digits}f}" if _finite(x) else "–"


def fmt_sig(x: Any, digits: int = 4) -> str:
    """Significant digits: a claim's statistic may be a count, a difference of scores or a q-value."""
    return f"{x:.{digits}g}" if _finite(x) else "–"


def fmt_pct(x: Any, digits: int = 1) -> str:
    return f"{100 * x:.{digits}f}" if _finite(x) else "–"


def fmt_count(x: Any) -> str:
    return f"{x:,}" if _finite(x) else "–"


def fmt_size(size: float | None) -> str:
    """A declared training-set size: all, a count, or a fraction."""
    if size is None:
        return "all"
    return str(int(size)) if float(size).is_integer() else f"{size:g}"


def sort_key(x: Any) -> str:
    """`data-sort` of a table cell: numbers as text the page's script parses; empty sorts last."""
    return repr(float(x)) if _finite(x) else ""


def verdict_class(verdict: str) -> str:
    """CSS class of a claim's verdict; anything but a decision (not enough runs) is undecided."""
    return {SUPPORTED: "supported", NOT_SUPPORTED: "refuted"}.get(verdict, "undecided")


def score_style(score: float | None) -> str:
    colours = figures.score_colours(score)
    return f"background:{colours[0]};color:{colours[1]}" if colours else ""


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(leaderboard_dir() / "templates"),
        autoescape=True,  # every spec and run name is text, never markup
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(num=fmt_num, sig=fmt_sig, pct=fmt_pct, count=fmt_count, size=fmt_size, sortkey=sort_key,
                       score_style=score_style, verdict_class=verdict_class)
    return env


# ---------------------------------------------------------------- page models

@dataclass
class Provenance:
    """What produced a page: specs, code versions, hardware, runs."""

    specs: list[dict]
    code: list[str]
    devices: list[str]
    runs: list[Run]
    latest: str | None  # most recent update of those runs, from the database


def _code_version(run: Run) -> str:
    try:
        versions = json.loads(run.versions) if run.versions else {}
    except ValueError:
        versions = {"versions": run.versions}
    parts = [f"{k} {v}" for k, v in sorted(versions.items())]
    parts.append(f"git {run.git_commit[:12]}" if run.git_commit else "git commit unknown")
    return " · ".join(parts)


def provenance(data: SiteData, runs: list[Run]) -> Provenance:
    hashes = sorted({r.spec_hash for r in runs if r.spec_hash in data.specs})
    updated = [r.updated_at for r in runs if r.updated_at is not None]
    return Provenance(
        specs=[data.specs[h] for h in hashes],
        code=sorted({_code_version(r) for r in runs}),
        devices=sorted({r.device or "unknown" for r in runs}),
        runs=runs,
        latest=max(updated).isoformat(sep=" ", timespec="seconds") if updated else None,
    )


def arch_page(g: Group) -> str:
    return f"arch-{g.slug}.html"


def _label(g: Group) -> str:
    size = fmt_size(g.train_size)
    examples = f" ({g.train_examples:,} examples)" if g.train_examples is not None and size != str(g.train_examples) else ""
    return f"{g.family} · {g.dataset} · train size {size}{examples}"


@dataclass
class GridSection:
    title: str
    axes: list[str]  # the parameters on rows and columns (none: a plain list of architectures)
    col_labels: list[str]
    rows: list[tuple[str, list[list[Group]]]]  # (label, the groups in each column's cell)


def _coordinate(g: Group, axis: str) -> tuple[tuple, str]:
    """Where a group sits along a grid axis: a sort key and a label."""
    v = g.params.get(axis)
    return value_key(v), f"{axis} {v if isinstance(v, str) else json.dumps(v)}"


def grid_sections(groups: list[Group]) -> list[GridSection]:
    """The index grids, one per family, dataset and training-set size. A cell holds every group at
    its coordinates: one, unless parameters other than the two axes vary too."""
    parts: dict[tuple, list[Group]] = defaultdict(list)
    for g in groups:
        parts[(g.family, g.dataset, g.train_size)].append(g)
    sections = []
    for members in parts.values():
        axes = grid_axes(members[0].family, members)
        cells: dict[tuple, list[Group]] = defaultdict(list)
        for i, g in enumerate(members):
            row = _coordinate(g, axes[0]) if axes else ((i,), g.name)
            col = _coordinate(g, axes[1]) if len(axes) > 1 else ((), "")
            cells[(row, col)].append(g)
        rows, cols = sorted({r for r, _ in cells}), sorted({c for _, c in cells})
        sections.append(GridSection(_label(members[0]), axes, [label for _, label in cols],
                                    [(r[1], [cells.get((r, c), []) for c in cols]) for r in rows]))
    return sections


def ranking(groups: list[Group]) -> list[Group]:
    """Best mean accuracy first; groups without one last."""
    return sorted(groups, key=lambda g: (g.accuracy is None, -(g.accuracy or 0.0)))


# ---------------------------------------------------------------- figures shared with benchsuite.open()

PC1_CAPTION = "Fraction of variance explained by the first PC"
PC1_LINES = dict(title="PC1 variance fraction by layer", ylabel="PC1 fraction")  # with series (seeds) and layers


def layer_labels(r: Run) -> list[list]:
    return [[layer.name, layer.stage] for layer in r.layers]


def cka_figure(r: Run) -> tuple[str, dict]:
    """Caption and `figures.heatmap` arguments of a run's CKA heatmap, its detected blocks outlined."""
    blocks = [[b["start_layer"], b["end_layer"]] for b in r.blocks]
    title = f"seed {r.seed}" + (f", {len(blocks)} block{'s' * (len(blocks) != 1)} outlined" if blocks else "")
    return title, dict(values=r.cka, rows=layer_labels(r), cols=layer_labels(r), title=f"CKA, {title}", blocks=blocks)


# ---------------------------------------------------------------- the build

class _Site:
    def __init__(self, data: SiteData, out: _Output):
        self.data, self.out = data, out
        self.env = _environment()
        self.group_of = {r.run_id: g for g in data.groups for r in g.runs}
        seeds = [p for p in data.cross if self.group_of[p.a.run_id] is self.group_of[p.b.run_id]]
        archs = [p for p in data.cross if self.group_of[p.a.run_id] is not self.group_of[p.b.run_id]]
        self.cross = {"cross-seeds.html": ("Across seeds", seeds), "cross-architectures.html": ("Across architectures", archs)}
        self.nav = [(page, title) for page, (title, pairs) in self.cross.items() if pairs]
        if data.errors:
            self.nav.append(("errors.html", "Error patterns"))
        if data.agreements:
            self.nav.append(("measures.html", "Similarity measures"))
        if data.claims:
            self.nav.append(("claims.html", "Claims"))

    def render(self, page: str, template: str, title: str, runs: list[Run], **context: Any) -> None:
        html = self.env.get_template(template).render(
            page=page, title=title, nav=self.nav, prov=provenance(self.data, runs), arch_page=arch_page,
            group_of=self.group_of, **context)
        self.out.write(page, html.encode())
        self.out.report.pages += 1

    def build(self) -> None:
        static = leaderboard_dir() / "static"
        for path in sorted(p for p in static.rglob("*") if p.is_file()):
            self.out.write(f"static/{path.relative_to(static).as_posix()}", path.read_bytes())
        d = self.data
        self.render("index.html", "index.html", "Where block structure appears", d.runs, groups=d.groups,
                    grids=grid_sections(d.groups), ranked=ranking(d.groups), gradient=figures.score_gradient())
        for g in d.groups:
            self.render(arch_page(g), "arch.html", g.name, g.runs, g=g, label=_label(g), sections=self._arch_figures(g))
        for page, (title, pairs) in self.cross.items():
            if pairs:
                self.render(page, "cross.html", title, self._runs({r.run_id for p in pairs for r in (p.a, p.b)}),
                            panels=self._cross_panels(page, pairs))
        if d.errors:
            self.render("errors.html", "errors.html", "Error patterns", self._runs({r.run_id for e in d.errors for r in e.runs}),
                        analyses=[(e, self._error_figure(e)) for e in d.errors])
        if d.agreements:
            self.render("measures.html", "measures.html", "Do similarity measures agree?",
                        self._runs({r.run_id for a in d.agreements for r in a.runs}),
                        analyses=[(a, self._measure_figures(a)) for a in d.agreements])
        if d.claims:
            self.render("claims.html", "claims.html", "Claims of the paper", d.runs, scopes=[
                (scope, slug(scope), [(c, self._claim_figure(slug(scope), c)) for c in claims])
                for scope, claims in d.claims.items()])

    def _runs(self, ids: set[str]) -> list[Run]:
        return [r for r in self.data.runs if r.run_id in ids]

    def _fig(self, folder: str, name: str, draw: Callable[..., bytes], caption: str, **data: Any) -> dict:
        return {"src": self.out.figure(f"fig/{folder}/{name}.svg", draw, **data), "caption": caption}

    def _arch_figures(self, g: Group) -> dict[str, list[dict]]:
        """Figures of an architecture page by section (cka, pc, probes); sections without data are left out."""
        runs, folder = g.complete, g.slug
        sections: dict[str, list[dict]] = defaultdict(list)

        layers = layer_labels

        def mean_map(section: str, attr: str, name: str, title: str, label: str) -> None:
            """The heatmap `attr` averaged over the seeds that have it (with the first one's shape)."""
            have = [r for r in runs if getattr(r, attr) is not None]
            if not have:
                return
            same = [r for r in have if getattr(r, attr).shape == getattr(have[0], attr).shape]
            title += f", mean over seeds {', '.join(str(r.seed) for r in same)}" if len(same) > 1 else f", seed {same[0].seed}"
            sections[section].append(self._fig(
                folder, name, figures.heatmap, caption=title, values=np.mean([getattr(r, attr) for r in same], axis=0),
                rows=layers(same[0]), cols=layers(same[0]), title=title, label=label))

        def by_layer(section: str, name: str, value: Callable[[Run], Any], caption: str, title: str, ylabel: str) -> None:
            """One line per seed of a value per probe point, and their mean."""
            have = [r for r in runs if value(r) is not None]
            if have:
                sections[section].append(self._fig(
                    folder, name, figures.layer_lines, caption=caption, series=[[f"seed {r.seed}", value(r)] for r in have],
                    layers=layers(have[0]), title=title, ylabel=ylabel))

        for r in runs:
            if r.cka is not None:
                caption, data = cka_figure(r)
                sections["cka"].append(self._fig(folder, f"cka-seed{r.seed}-{r.run_id[:8]}", figures.heatmap,
                                                 caption=caption, **data))
        if len(sections["cka"]) > 1:
            mean_map("cka", "cka", "cka-mean", "CKA", "CKA")
        by_layer("pc", "pc1", lambda r: r.pc1, PC1_CAPTION, **PC1_LINES)
        mean_map("pc", "pc_cosines", "pc-cosines", "First-PC squared cosine", "squared cosine")
        mean_map("pc", "cka_pc_removed", "cka-pc-removed", "CKA after removing PC1", "CKA")
        by_layer("probes", "probes", lambda r: per_layer(r.probes, "accuracy") if r.probes else None,
                 "Linear-probe test accuracy at every probe point", "Linear-probe accuracy by layer", "accuracy")
        return {k: v for k, v in sections.items() if v}

    def _cross_panels(self, page: str, pairs: list) -> list[dict]:
        """One mean heatmap per pair of architectures (or per architecture, across its seeds)."""
        by_groups: dict[tuple, list] = defaultdict(list)
        for p in pairs:
            by_groups[(self.group_of[p.a.run_id].slug, self.group_of[p.b.run_id].slug)].append(p)
        panels = []
        for (slug_a, slug_b), ps in by_groups.items():
            same = [p for p in ps if p.cka.shape == ps[0].cka.shape]
            ga, gb = self.group_of[ps[0].a.run_id], self.group_of[ps[0].b.run_id]
            seeds = ", ".join(f"{p.a.seed}–{p.b.seed}" for p in same)
            title = f"{ga.name} vs {gb.name}" if ga is not gb else ga.name
            rows = [[layer.name, layer.stage] for layer in ps[0].a.layers]
            cols = [[layer.name, layer.stage] for layer in ps[0].b.layers]
            fig = self._fig(page.removesuffix(".html"), slug_a if ga is gb else f"{slug_a}--{slug_b}", figures.heatmap,
                            caption=f"mean over {len(same)} pair{'s' * (len(same) != 1)} of seeds ({seeds})",
                            values=np.mean([p.cka for p in same], axis=0), rows=rows, cols=cols, title=title,
                            xlabel=f"layer of {gb.name}", ylabel=f"layer of {ga.name}")
            panels.append({"a": ga, "b": gb, "figure": fig, "pairs": same})
        return panels

    def _measure_figures(self, a) -> list[dict]:
        """One within-model heatmap per measure of the analysis's shown run."""
        layers = [[layer.name, layer.stage] for layer in a.run.layers]
        return [self._fig(f"measures/{a.analysis_id}", slug(label), figures.heatmap, caption=label, values=values,
                          rows=layers, cols=layers, title=f"{label}, seed {a.run.seed}", label="similarity")
                for label, values in a.heatmaps]

    def _error_figure(self, e) -> dict | None:
        rows = [c for c in e.classes if _finite(c["mean_a"]) and _finite(c["mean_b"])]
        if not rows:
            return None
        return self._fig("errors", e.analysis_id, figures.class_bars, caption="per-class accuracy, * significant",
                         classes=[c["class"] for c in rows], mean_a=[c["mean_a"] for c in rows],
                         mean_b=[c["mean_b"] for c in rows], significant=[bool(c["significant"]) for c in rows],
                         title=f"Per-class accuracy ({e.kind})", labels=[_group_label(e.options, k) for k in "ab"])

    def _claim_figure(self, scope: str, c: ClaimResult) -> dict | None:
        if not has_figure(c):
            return None
        return self._fig("claims", f"{scope}-{c.claim}", figures.claim, caption=f"{c.claim}: {c.title}", **asdict(c))


def _group_label(options: dict, k: str) -> str:
    """A group of an error comparison as its options select it (group_a / group_b), else its letter."""
    selector = options.get(f"group_{k}")
    if selector is None:
        return f"group {k.upper()}"
    return f"{k.upper()}: {selector if isinstance(selector, str) else json.dumps(selector, sort_keys=True)}"


def build_site(db: str | None = None, out: str | Path = "_site", extra_files: dict[str, bytes] | None = None) -> BuildReport:
    """Build the leaderboard from the database `db` (default: BENCH_DB, else bench.duckdb) into `out`."""
    data = load_site_data(db)  # a database that cannot be read fails before anything is written
    output = _Output(Path(out))
    _Site(data, output).build()
    for rel, blob in sorted((extra_files or {}).items()):
        output.write(rel, blob)
    return output.finish()


def publish_site(db: str | None = None, out: str | Path = "site", cname: str | None = None) -> BuildReport:
    """A folder ready to push to GitHub Pages (or any static host): the site, `.nojekyll`, optionally CNAME."""
    extra = {".nojekyll": b""}  # serve files as they are, without a Jekyll pass
    if cname:
        extra["CNAME"] = f"{cname.strip()}\n".encode()
    return build_site(db, out, extra)
